"""Verdicts: candidate vs baseline paired case by case (``compare``), the gate's decision rule (``decision``), stored
comparisons (``record``), serving health and speed beside quality, and each series' drift (``series``).

This module imports nothing, so a module of the package never imports the package back.
"""
