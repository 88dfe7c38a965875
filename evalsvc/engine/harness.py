"""Running an lm-eval task against a served variant, through lm-eval's Python API; stored per sample.

lm-eval sends a task's requests as one batch and, when a request still fails after its
retries, raises and returns nothing: such a run is *failed* with the cause and no case is
scored. A harness run resumes at task granularity.

Loglikelihood tasks (multiple choice, perplexity) need correct prompt logprobs via
``echo``: vLLM gives them, llama.cpp's server does not, so such a task is refused unless
the endpoint declares ``echo_logprobs: true`` and a local ``tokenizer``.

The variant's sampling settings (temperature, top_p, seed) and system prompt reach lm-eval's
requests, as they are part of its fingerprint; the task's own stop sequences and generation
length stay the task's (they are part of the task's definition and its version). lm-eval sends
one seed with every request; when sampling (temperature > 0) each document gets a seed of its own
instead, as a plain suite's case does (``plan.sample_params``: seed + a hash of the document's
prompt), or a whole run would be one draw. lm-eval fills a null answer with a placeholder and
scores it as wrong; here such a document is an errored case.

lm-eval's progress bars, its log messages and those of the libraries under it (datasets, the Hub) are the run's
own business: while the task runs they go to its log file (``log``), and the terminal shows evalsvc's one bar per
run (``engine/progress.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from evalsvc.config import HarnessSpec, VariantConfig
from evalsvc.engine.plan import sample_params
from evalsvc.errors import ConfigError, EndpointError, SuiteError
from evalsvc.serving import Served
from evalsvc.suites.harness import materialise
from evalsvc.suites.lm_eval_samples import NULL_ANSWER, Sample, samples_of

LOGLIKELIHOOD = {"loglikelihood", "loglikelihood_rolling", "multiple_choice"}
CHAT_MODEL = "evalsvc-local-chat-completions"  # lm-eval's local-chat-completions, with a seed per document
# loggers whose messages (at INFO and above) go to the task's log file while it runs, and nowhere else
LIBRARY_LOGGERS = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "evaluate", "transformers", "fsspec", "filelock")


def run_task(spec: HarnessSpec, base: Path, variant: VariantConfig, served: Served, params: dict[str, Any], *,
             concurrency: int, timeout_s: float, max_retries: int, log: Path | None = None) -> tuple[list[Sample], list[str]]:
    """Run one task against a served variant with the run's sampling ``params``; returns its samples and metric names.
    lm-eval's bars and messages are appended to ``log`` (None: left as lm-eval makes them)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet = _output_into(log, f"task {spec.task}, variant {variant.name}") if log else contextlib.nullcontext()
    with quiet, tempfile.TemporaryDirectory(prefix="evalsvc-harness-") as tmp:  # from lm-eval's import on
        include = Path(tmp) / "tasks"
        include.mkdir()
        if spec.include is not None:
            materialise(spec, base, include)
        import lm_eval
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=str(include) if spec.include else None, include_defaults=spec.include is None)
        if spec.task not in tm.task_index:
            raise SuiteError(f"harness.task {spec.task}", "lm-eval knows no such task",
                             "bundle it as a YAML in the suite's include folder (built-in tasks need the Hub)")
        output_type = (tm.task_index[spec.task].cfg or {}).get("output_type", "generate_until")
        model, model_args, chat = _model_args(variant, served, output_type, spec.task, concurrency, timeout_s, max_retries)
        if params.get("seed") is not None:
            model_args["seed"] = params["seed"]
        gen_kwargs = {k: params[k] for k in ("temperature", "top_p") if k in params} if output_type not in LOGLIKELIHOOD else None
        from lm_eval.models import api_models  # its documented knob (LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER), read per answer

        previous_placeholder, api_models.LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER = (
            api_models.LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER, NULL_ANSWER)
        previous_cache = os.environ.get("HF_DATASETS_CACHE")
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")  # keep lm-eval's Arrow cache out of the way
        try:
            results = lm_eval.simple_evaluate(
                model=model, model_args=model_args, tasks=[spec.task], task_manager=tm, apply_chat_template=chat,
                log_samples=True, num_fewshot=spec.num_fewshot, limit=spec.limit, bootstrap_iters=0,
                use_cache=None, cache_requests=False, gen_kwargs=gen_kwargs, system_instruction=variant.system_prompt)
        except Exception as exc:  # lm-eval raises requests/aiohttp/Timeout errors after its own retries
            raise EndpointError(f"lm-eval task '{spec.task}' failed: {type(exc).__name__}: {exc}") from None
        finally:
            api_models.LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER = previous_placeholder
            if previous_cache is None:
                os.environ.pop("HF_DATASETS_CACHE", None)
            else:
                os.environ["HF_DATASETS_CACHE"] = previous_cache
    metrics = [m["metric"] for m in results["configs"][spec.task]["metric_list"]]
    return samples_of(results["samples"][spec.task], metrics, output_type in LOGLIKELIHOOD), metrics


@contextlib.contextmanager
def _output_into(log: Path, what: str) -> Iterator[None]:
    """While lm-eval runs, what it and the libraries under it write goes to ``log``: stdout and stderr (tqdm's bars,
    warnings, prints), file descriptor 2 (what its child processes write there, e.g. git's "not a git repository"
    when lm-eval asks for a commit hash), and the messages of ``LIBRARY_LOGGERS``, whose own handlers hold the
    terminal's stream (lm-eval makes its handler once per process). evalsvc's bar is drawn before and after, on the
    stream it was made with. Everything is put back afterwards."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8", buffering=1) as f, _fd2_into(f):
        f.write(f"\n==== {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} lm-eval {what}\n")
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved = []
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
            logger.handlers, logger.propagate = [handler], False
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            for logger, handlers, propagate, level in saved:
                logger.handlers, logger.propagate = handlers, propagate
                logger.setLevel(level)


@contextlib.contextmanager
def _fd2_into(f: TextIO) -> Iterator[None]:
    """File descriptor 2 points at ``f`` (where the process has one to point; otherwise nothing changes)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _model_args(variant: VariantConfig, served: Served, output_type: str, task: str, concurrency: int,
                timeout_s: float, max_retries: int) -> tuple[str, dict[str, Any], bool]:
    common = {"model": served.model, "num_concurrent": concurrency, "max_retries": max_retries + 1,
              "timeout": int(timeout_s)}
    if output_type not in LOGLIKELIHOOD:
        _register_chat_model()
        return (CHAT_MODEL,
                {**common, "base_url": served.base_url + "/chat/completions", "tokenizer_backend": None,
                 "tokenized_requests": False}, True)
    ep, loc = variant.endpoint, variant.local
    if loc is not None and loc.engine == "vllm":  # vLLM's echo logprobs are right, and the folder has the tokenizer
        tokenizer = str(loc.model_path)
    elif ep is not None and ep.echo_logprobs and ep.tokenizer:
        tokenizer = ep.tokenizer
    else:
        raise ConfigError(
            f"variant {variant.name}, task {task}",
            f"the task needs prompt log-probabilities ({output_type}), which this endpoint cannot give "
            "(llama.cpp's server returns them shifted by one token)",
            "serve the variant with vLLM (local: {engine: vllm}), or for an external vLLM endpoint set "
            "endpoint.echo_logprobs: true and endpoint.tokenizer: <local HF folder>")
    return ("local-completions",
            {**common, "base_url": served.base_url + "/completions", "tokenizer_backend": "huggingface",
             "tokenizer": tokenizer, "tokenized_requests": False}, False)


def document_seed(messages: list[dict[str, Any]], seed: int, temperature: float) -> int:
    """The seed of one lm-eval request: at temperature > 0, seed + a hash of the document's prompt (its messages but the
    system prompt, so two variants that differ only there still draw alike on each document), as ``sample_params``
    gives a plain suite's case; at temperature 0 the seed as configured."""
    prompt = json.dumps([m for m in messages if m.get("role") != "system"], sort_keys=True)
    return int(sample_params({"seed": seed, "temperature": temperature}, 0, prompt)["seed"])


@functools.cache
def _register_chat_model() -> None:
    """Register ``CHAT_MODEL`` with lm-eval (once: lm-eval is imported only when a harness suite runs)."""
    from lm_eval.api.registry import register_model
    from lm_eval.models.openai_completions import LocalChatCompletion

    @register_model(CHAT_MODEL)
    class _PerDocumentSeed(LocalChatCompletion):  # lm-eval builds every payload here, with its one seed
        def _create_payload(self, messages: list[dict], generate: bool = False, gen_kwargs: dict | None = None,
                            seed: int = 1234, eos: str | None = None, **kwargs: Any) -> dict:
            payload = super()._create_payload(messages, generate=generate, gen_kwargs=gen_kwargs, seed=seed, eos=eos, **kwargs)
            if isinstance(payload.get("seed"), int) and isinstance(messages, list):
                payload["seed"] = document_seed(messages, payload["seed"], float(payload.get("temperature") or 0.0))
            return payload
