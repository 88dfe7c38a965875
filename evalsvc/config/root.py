"""evalsvc.yaml: what to evaluate, against what, and where results go.

Secrets never live in this file: API keys are named by environment variable
(``api_key_env``), and the store URL may come from ``EVALSVC_STORE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from evalsvc.config.alerts import AlertsConfig
from evalsvc.config.base import Strict
from evalsvc.config.dashboard import DashboardConfig, url_without_password
from evalsvc.config.divergence import DivergenceConfig
from evalsvc.config.drift import DriftConfig
from evalsvc.config.executor import Executor, LocalExecutor
from evalsvc.config.gate import GateConfig
from evalsvc.config.schedule import ScheduleSpec
from evalsvc.config.variants import Generation, VariantConfig, fingerprint
from evalsvc.config.yamlfile import load_yaml_model
from evalsvc.errors import ConfigError

DEFAULT_CONFIG = "evalsvc.yaml"
STORE_ENV = "EVALSVC_STORE"


class Config(Strict):
    """The whole configuration file."""

    store: str = Field("sqlite:///evalsvc.db", description="SQLAlchemy URL; EVALSVC_STORE overrides it")
    suites_dir: Path = Path("suites")
    suites: list[str] | None = Field(None, description="suite names to run by default; None: every suite in suites_dir")
    variants: list[VariantConfig] = Field(default_factory=list)
    baselines: dict[str, str] = Field(default_factory=dict, description="family -> name of its baseline variant")
    generation: Generation = Field(default_factory=Generation)
    concurrency: int = Field(4, ge=1, le=1024, description="requests in flight per variant")
    request_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    max_backoff_s: float = Field(30.0, gt=0, le=3600, description="longest wait between retries; a 429 asking to wait "
                                 "longer (Retry-After) errors the case at once instead")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="a run with more errored cases than this is failed")
    circuit_breaker: int = Field(8, ge=1, description="stop a run after this many errored cases in a row")
    resume_within_h: float = Field(24.0, gt=0, description="`evalsvc run` without --slot resumes an unfinished manual run "
                                   "only if it was made within this many hours (else it starts a new one)")
    gate: GateConfig = Field(default_factory=GateConfig)
    alerts: AlertsConfig | None = None
    drift: DriftConfig = Field(default_factory=DriftConfig)
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig, description="top log-probabilities asked "
                                         "with each answer, for its divergence from the baseline (docs/divergence.md)")
    schedules: list[ScheduleSpec] = Field(default_factory=list, description="what `evalsvc serve` runs, and when")
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    executor: Executor = Field(default_factory=LocalExecutor, description="where runs execute: local (default) or a "
                               "Ray cluster (docs/cluster.md)")

    @field_validator("store")
    @classmethod
    def _no_inline_password(cls, url: str) -> str:
        return url_without_password(url)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Config:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        for v in self.variants:
            gen = self.generation_for(v)
            if gen.samples > 1 and gen.temperature == 0:
                raise ValueError(f"variant '{v.name}': samples: {gen.samples} at temperature 0 asks {gen.samples} times for "
                                 "one answer (the same request, the same seed); raise generation.temperature above 0 "
                                 "(sample k is then sent with seed + k), or set samples: 1")
        if self.executor.type == "ray":
            for v in self.variants:
                if v.local is not None and v.local.gpu_ids is not None:
                    raise ValueError(f"variant '{v.name}': local.gpu_ids with executor type ray; Ray hands each task its "
                                     "GPUs (CUDA_VISIBLE_DEVICES): remove gpu_ids, and set tensor_parallel_size (and "
                                     "data_parallel_size) for how many it needs")
        by_name = {v.name: v for v in self.variants}
        for sched in self.schedules:  # checked with the file, not when the schedule first fires
            if sched.sequential and self.executor.type == "ray":
                raise ValueError(f"schedules: {sched.name}: sequential: true with executor type ray; a sequential "
                                 "comparison asks both variants look by look from the scheduler's process: drop "
                                 "sequential, or use the local executor")
            for name in sched.variants or []:
                if name not in by_name:
                    import difflib

                    close = difflib.get_close_matches(name, names, n=1)
                    raise ValueError(f"schedules: {sched.name}: no variant named '{name}' ("
                                     + (f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names) or 'none'}")
                                     + ")")
        for family, base in self.baselines.items():
            if base not in by_name:
                raise ValueError(f"baselines.{family}: no variant named '{base}' (known: {', '.join(names) or 'none'})")
            if by_name[base].family != family:
                raise ValueError(f"baselines.{family}: variant '{base}' belongs to family '{by_name[base].family}'")
        return self

    def variant(self, name: str) -> VariantConfig:
        for v in self.variants:
            if v.name == name:
                return v
        import difflib

        close = difflib.get_close_matches(name, [v.name for v in self.variants], n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known variants: {', '.join(v.name for v in self.variants) or 'none'}"
        raise ConfigError(f"--variant {name}", "no such variant in the config", hint)

    def generation_for(self, variant: VariantConfig) -> Generation:
        """Config-wide defaults overlaid with the variant's own settings."""
        if variant.generation is None:
            return self.generation
        return self.generation.model_copy(update=variant.generation.model_dump(exclude_unset=True))

    def fingerprint(self, name: str) -> str:
        """The fingerprint of the named variant under its effective generation settings."""
        variant = self.variant(name)
        try:
            return fingerprint(variant, self.generation_for(variant))
        except FileNotFoundError:  # a local checkpoint not built or not copied yet: the user's to fix, not a crash
            assert variant.local is not None
            raise ConfigError(f"variants: {name}", f"its checkpoint {variant.local.model_path} does not exist",
                              "build the demo variants with `evalsvc models build` (evalsvc init --demo), or point "
                              "local.model_path at the checkpoint") from None

    def store_url(self) -> str:
        return os.environ.get(STORE_ENV) or self.store


def store_url(config_path: str | os.PathLike[str] = DEFAULT_CONFIG) -> str:
    """EVALSVC_STORE when set (then the file need not exist: `evalsvc db upgrade` on a fresh store), else the config's."""
    return os.environ.get(STORE_ENV) or load_config(config_path).store_url()


def load_config(path: str | os.PathLike[str] = DEFAULT_CONFIG) -> Config:
    """Read and validate the config; ``${VAR}`` and ``${VAR:-default}`` come from the environment, and relative
    paths in it are taken from the file's folder. With EVALSVC_STORE set, ``store:`` is not read at all (the
    starter's ``${PGHOST}`` need not be set): ``store_url()`` is EVALSVC_STORE."""
    path = Path(path)
    override = os.environ.get(STORE_ENV)
    cfg = load_yaml_model(path, Config, ConfigError, env=True, env_skip=("store",) if override else ())
    base = path.resolve().parent
    if not cfg.suites_dir.is_absolute():
        cfg.suites_dir = base / cfg.suites_dir
    for v in cfg.variants:
        if v.local is not None and not v.local.model_path.is_absolute():
            v.local.model_path = base / v.local.model_path
    if cfg.alerts and cfg.alerts.slack and cfg.alerts.slack.webhook_file and not cfg.alerts.slack.webhook_file.is_absolute():
        cfg.alerts.slack.webhook_file = base / cfg.alerts.slack.webhook_file
    cfg.store = _absolute_sqlite(cfg.store, base)
    if cfg.dashboard.store:
        cfg.dashboard.store = _absolute_sqlite(cfg.dashboard.store, base)
    return cfg


def _absolute_sqlite(url: str, base: Path) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:":
            return f"sqlite:///{base / rel}"
    return url
