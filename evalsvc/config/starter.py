"""The evalsvc.yaml that `evalsvc init` writes: a starter for a real deployment, commented to say what to edit.

An endpoint baseline (what serves users today), a quantized candidate that evalsvc serves with vLLM, gate margins
chosen on purpose, a nightly schedule, Slack alerts and a PostgreSQL store. Secrets stay out of the file: the store's
host comes from the environment (``${PGHOST}``: reading the file without it is an error naming the line), its password
from libpq's own PGPASSWORD or ~/.pgpass, the API key and the Slack webhook from variables named here.
`evalsvc init --demo` writes the local SmolLM2 one instead (``local_models.starter_config``), and
`evalsvc init --quickstart` a SQLite one with two endpoints and a sample suite (``QUICKSTART``, ``sample_suite``).
tests/test_init.py loads these texts with ``load_config``, and checks the case counts in their margin comments against
``stats.power.n_for_noninferiority``.
"""

from __future__ import annotations

# environment variables the starter reads when loaded (the others are read when used: the API key, the webhook)
REQUIRED_ENV = ("PGHOST",)

PRODUCTION = """\
# evalsvc.yaml: a starter for a real deployment. Edit the lines marked EDIT, then check the file with
# `evalsvc variants` (it reads every key and prints each variant's fingerprint). Every key is validated:
# a typo is an error naming its line. Reference: README.md (Configuration), docs/gate.md, docs/vllm.md.
#
# Secrets never live in this file. It reads these environment variables:
#   PGHOST                 the PostgreSQL server of the store (needed to read this file unless EVALSVC_STORE
#                          is set); PGUSER, PGPORT and
#                          PGDATABASE are optional; the password comes from PGPASSWORD or ~/.pgpass (libpq)
#   EVALSVC_STORE          optional: a whole store URL that replaces `store:`, which is then not read at all
#                          (it may carry the password; sqlite:///evalsvc.db tries the file without PostgreSQL)
#   BASELINE_API_KEY       the baseline endpoint's API key (when it needs one)
#   EVALSVC_SLACK_WEBHOOK  the Slack incoming-webhook URL that alerts are posted to
# ${VAR} is required; ${VAR:-value} falls back to value when VAR is unset or empty.

# Where every result goes. PostgreSQL for a service that several processes share (the scheduler, the
# dashboard, CI gates). Create the schema once per release: `evalsvc db upgrade`.
store: postgresql+psycopg://${PGUSER:-evalsvc}@${PGHOST}:${PGPORT:-5432}/${PGDATABASE:-evalsvc}

# Your suites: suites/<name>.yaml headers with <name>.jsonl cases (README: Suites). `evalsvc suites validate`
# checks them. Without `suites:` every suite in suites_dir runs.
suites_dir: suites
# suites: [support-faq, extraction]   # EDIT: the suites `evalsvc run` and the schedule run by default

concurrency: 8            # requests in flight per variant: a little above the server's parallel slots
request_timeout_s: 120    # bounds a whole request, however slowly the answer arrives
max_retries: 4            # 5xx, timeouts and resets back off; 429 waits for Retry-After
max_error_rate: 0.05      # a run with more errored cases than this is failed (never a regression)
generation: {temperature: 0.0, max_tokens: 256, seed: 0}   # part of every variant's fingerprint

# Each family's candidates are compared with its baseline.
baselines: {my-model: prod}   # EDIT: family -> baseline variant name

variants:
  # The baseline: the model as it serves users today, through any OpenAI-compatible endpoint
  # (vLLM, TGI, a gateway, a hosted API). Its fingerprint holds the model name, revision and URL.
  - name: prod
    family: my-model
    quantization: BF16
    endpoint:
      base_url: http://llm-gateway.internal:8000/v1   # EDIT: the server's OpenAI API root
      model: my-org/my-model                           # EDIT: the model name the server expects
      revision: main                                   # EDIT: the checkpoint revision it serves, if known
      api_key_env: BASELINE_API_KEY                    # the variable that holds the key, never the key

  # The candidate: a quantized checkpoint that evalsvc serves itself with vLLM (started, health-checked
  # and stopped for each run; its log is in .evalsvc/logs/). The checkpoint's file hashes, the vLLM
  # version and the arguments below are its fingerprint: re-quantizing starts a new series.
  - name: candidate-fp8
    family: my-model
    quantization: FP8
    local:
      engine: vllm
      model_path: /models/my-model-FP8   # EDIT: the quantized checkpoint (a Hugging Face folder, e.g. llm-compressor's)
      dtype: auto
      tensor_parallel_size: 1            # GPUs one replica spans (e.g. 2 or 4 for a 70B model)
      gpu_ids: [0]                       # CUDA_VISIBLE_DEVICES for it (remove with executor type ray)
      start_timeout_s: 900               # loading a large checkpoint takes minutes
      extra_args: {max_model_len: 8192, gpu_memory_utilization: 0.90}
      # quantization_method: fp8         # vllm --quantization; omit when config.json names the scheme
      # python: /opt/vllm/bin/python     # an interpreter with vLLM, when it is not this one

# `evalsvc gate --candidate candidate-fp8`: non-inferiority against the baseline, case by case
# (docs/gate.md). The margins are the decision: how much worse may the candidate be and still ship?
gate:
  alpha: 0.05                  # one-sided error rate of a false pass, and of any false regression
  primary: [pass]              # the metrics that decide, in every suite that measures them
  margins:
    default: {absolute: 0.02}  # pass rates: at most 2 points worse than the baseline. At 0.02 the gated suites'
                               # cases, pooled, must number >= 133 to pass even when nothing changed, and 837
                               # where 5% of cases flip (0.05: 52 and 167); `evalsvc gate --plan` counts yours
    rougeL: {relative: 0.97}   # a continuous score: keep 97% of the baseline's mean (it decides once in primary)
    # latency_p95: {relative: 0.90}   # uncomment to let speed decide too: at most 10% slower at p95
  fail_on_inconclusive: true   # too few cases to show "no worse" exits 3: add cases, do not ship blind
  health_margin: 0.02          # at most 2% more unanswered cases than the baseline

# `evalsvc serve` runs these (one scheduler per store; a slot missed while it was down runs once on return),
# compares each variant with its family's baseline and raises alerts.
schedules:
  - name: nightly
    cron: "0 2 * * *"          # every day at 02:00 UTC (minute hour day month weekday)
    compare: true

alerts:
  dashboard_url: http://evalsvc-dashboard.internal:8501   # EDIT: where `evalsvc dashboard` is reached; linked from alerts
  slack: {webhook_env: EVALSVC_SLACK_WEBHOOK}             # or webhook_file: /run/secrets/slack-webhook
"""


def production_starter() -> str:
    """The production starter's text (YAML with comments)."""
    return PRODUCTION


# `evalsvc init --quickstart`: a first gate in minutes, against two endpoints the user already has
QUICKSTART_ENV = ("BASELINE_URL", "BASELINE_MODEL", "CANDIDATE_URL", "CANDIDATE_MODEL")
SAMPLE_SUITE = "sample"
SAMPLE_CASES = 60

QUICKSTART = """\
# evalsvc.yaml: a quickstart that gates one OpenAI-compatible endpoint against another.
# It reads these environment variables (a ${VAR} that is unset is an error naming its line):
#   BASELINE_URL, BASELINE_MODEL     the endpoint that serves users today (its OpenAI API root, e.g.
#                                    http://gpu-box:8000/v1) and the model name it expects
#   CANDIDATE_URL, CANDIDATE_MODEL   the variant to judge: another quantization, server or model
#   BASELINE_API_KEY, CANDIDATE_API_KEY   their API keys, when they need one: uncomment api_key_env below
#                                    (an api_key_env whose variable is unset is an error; never write a key here)
# `evalsvc init` (without --quickstart) writes the production starter: PostgreSQL, schedules, alerts.

store: sqlite:///evalsvc.db   # a file beside this one; EVALSVC_STORE overrides it
suites_dir: suites            # suites/sample.yaml + sample.jsonl: replace them with your own cases
concurrency: 4
generation: {temperature: 0.0, max_tokens: 32, seed: 0}

baselines: {my-model: baseline}

variants:
  - name: baseline
    family: my-model
    endpoint:
      base_url: ${BASELINE_URL}
      model: ${BASELINE_MODEL}
      # api_key_env: BASELINE_API_KEY
  - name: candidate
    family: my-model
    endpoint:
      base_url: ${CANDIDATE_URL}
      model: ${CANDIDATE_MODEL}
      # api_key_env: CANDIDATE_API_KEY

gate:
  margins:
    default: {absolute: 0.10}  # at most 10 points worse. At 0.10 a gate needs >= 25 cases to pass when nothing
                               # changed and 56 where 5% of cases flip: the sample has 60. At 0.05: 52 and 167;
                               # at 0.02: 133 and 837. `evalsvc gate --plan` counts your suites.
  fail_on_inconclusive: true   # too few cases to show "no worse" exits 3
"""

QUICKSTART_NEXT = """\
next:
  export BASELINE_URL=... BASELINE_MODEL=... CANDIDATE_URL=... CANDIDATE_MODEL=...
  evalsvc variants                                   checks the file, prints each variant's fingerprint
  evalsvc gate --candidate candidate --markdown gate.md   runs both on the sample suite and compares them (exit 0 pass)
  evalsvc dashboard                                  the results in a browser (pip install 'evalsvc[dashboard]')"""


def sample_suite() -> tuple[str, str]:
    """The quickstart's sample suite: its header and its JSONL cases (additions any chat model answers, each checked
    for the sum as a whole word)."""
    header = (f"name: {SAMPLE_SUITE}\ncases: {SAMPLE_SUITE}.jsonl\n"
              "description: a sample to try the gate with; replace it with cases from your own traffic\n"
              "system_prompt: Answer with the number only.\n")
    lines = []
    for i in range(SAMPLE_CASES):
        a, b = 3 + (i * 7) % 40, 2 + (i * 11) % 30
        lines.append(f'{{"id": "add-{i:02d}", "input": "What is {a} + {b}?", '
                     f'"checks": [{{"type": "contains", "value": "{a + b}"}}]}}')
    return header, "\n".join(lines) + "\n"
