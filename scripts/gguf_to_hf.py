"""Convert a GGUF checkpoint to a bf16 Hugging Face folder that vLLM serves (vLLM cannot serve GGUF on CPU).

    .venvs/vllm/bin/python scripts/gguf_to_hf.py models/smollm2-135m-f16.gguf models/hf/smollm2-135m-bf16

Runs in the vLLM environment (it has torch and transformers; `gguf` is installed there by scripts/setup.sh). The
weights are dequantized by transformers' GGUF loader and saved in bfloat16 with the tokenizer; the folder is
written next to its final name and renamed, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
    if not gguf.is_file():
        sys.exit(f"{gguf}: no such GGUF file; build the local variants first (bash scripts/setup.sh)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    for attr in ("hf_quantizer", "quantization_config"):  # the GGUF loader's marks: the saved folder is plain bf16
        if hasattr(model, attr):
            delattr(model, attr)
        model.config.__dict__.pop(attr, None)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"wrote {out} (bf16, from {gguf.name})")


if __name__ == "__main__":
    main()
