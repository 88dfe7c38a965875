"""Compress SmolLM2's bf16 Hugging Face folder with llm-compressor into vLLM's compressed-tensors checkpoints.

    .venvs/llmcompressor/bin/python scripts/compress_checkpoints.py models/hf/smollm2-135m-bf16 models/hf [SCHEME...]

Runs in llm-compressor's own environment (vLLM's docs advise keeping the two apart: each pins its own torch and
compressed-tensors). Schemes (default: all of them):

- ``w8a8``: INT8 weights and activations, SmoothQuant (strength 0.8) then GPTQ, llm-compressor's W8A8 example;
- ``w4a16``: INT4 weights in groups of 64 (SmolLM2-135M's hidden size, 576, is not a multiple of the usual 128),
  16-bit activations, GPTQ.

Calibration: 64 prompts of the bundled suites (their inputs and contexts), at most 512 tokens each: nothing is
downloaded. Each checkpoint is written next to its final name and renamed, and its folder holds `compress.json`
with the scheme, the versions and the seconds it took.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

SUITES = Path(__file__).resolve().parents[1] / "suites"
SCHEMES = ("w8a8", "w4a16")


def calibration_texts(limit: int = 64) -> list[str]:
    texts = []
    for path in sorted(SUITES.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                case = json.loads(line)
                texts.append(" ".join(str(case.get(k, "")) for k in ("context", "input")).strip())
    return [t for t in texts if t][:limit]


def recipe(scheme: str) -> list:  # type: ignore[type-arg]
    from llmcompressor.modifiers.quantization import GPTQModifier

    if scheme == "w8a8":
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])]
    # W4A16 with groups of 64: SmolLM2-135M's hidden size (576) is not a multiple of the preset's 128
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}
    return [GPTQModifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}}, ignore=["lm_head"])]


def compress(source: Path, out_dir: Path, scheme: str) -> Path:
    import importlib.metadata as md

    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    texts = calibration_texts()
    data = Dataset.from_dict(tokenizer(texts, max_length=512, truncation=True))
    oneshot(model=model, dataset=data, recipe=recipe(scheme), max_seq_length=512, num_calibration_samples=len(texts))
    final = out_dir / f"{source.name.removesuffix('-bf16')}-{scheme}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, save_compressed=True)
    tokenizer.save_pretrained(partial)
    seconds = time.perf_counter() - started
    (partial / "compress.json").write_text(json.dumps({
        "scheme": scheme, "source": source.name, "calibration_prompts": len(texts), "seconds": round(seconds, 1),
        "llmcompressor": md.version("llmcompressor"), "compressed-tensors": md.version("compressed-tensors"),
        "torch": md.version("torch")}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    print(f"wrote {final} ({scheme}, {seconds:.0f} s)")
    return final


def main() -> None:
    if len(sys.argv) < 3 or any(s not in SCHEMES for s in sys.argv[3:]):
        sys.exit(__doc__)
    source, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    if not (source / "config.json").is_file():
        sys.exit(f"{source}: no Hugging Face folder; make it first (bash scripts/setup.sh --vllm)")
    for scheme in sys.argv[3:] or SCHEMES:
        compress(source, out_dir, scheme)


if __name__ == "__main__":
    main()
