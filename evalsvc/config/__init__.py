"""The configuration schema: evalsvc.yaml, suite headers and cases, as pydantic models and nothing else.

Reading a file needs pydantic and the YAML loader alone (no store, scheduler or engine), so
validating a config or a suite is cheap and cannot reach past this package.
"""

from evalsvc.config.alerts import AlertsConfig, SlackConfig
from evalsvc.config.base import Strict
from evalsvc.config.dashboard import DashboardConfig
from evalsvc.config.drift import DriftConfig
from evalsvc.config.gate import GateConfig, Margin, SuiteGate
from evalsvc.config.harness import HarnessSpec
from evalsvc.config.root import DEFAULT_CONFIG, STORE_ENV, Config, load_config, store_url
from evalsvc.config.schedule import ScheduleSpec
from evalsvc.config.suite import CaseSpec, Message, SuiteHeader
from evalsvc.config.variants import EndpointSpec, Generation, LocalSpec, VariantConfig, fingerprint, serving_identity

__all__ = [
    "DEFAULT_CONFIG", "STORE_ENV", "AlertsConfig", "CaseSpec", "Config", "DashboardConfig", "DriftConfig", "EndpointSpec",
    "GateConfig", "Generation", "HarnessSpec", "LocalSpec", "Margin", "Message", "ScheduleSpec", "SlackConfig", "Strict",
    "SuiteGate", "SuiteHeader", "VariantConfig", "fingerprint", "load_config", "serving_identity", "store_url",
]
