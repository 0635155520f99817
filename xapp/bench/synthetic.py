"""Random-weight Qwen2 checkpoints for tests and benchmarks: the real architecture and load path, no download.

A byte-level BPE tokenizer is trained locally on O-RAN text (the knowledge base shipped in
``xapp/store/kb`` plus a built-in paragraph), and a Qwen-style chat template is attached. The model's
output-embedding rows for special tokens, for tokens without a letter or digit and for ids the tokenizer
does not have are zeroed: with random
weights every other logit wins over 0 almost surely, so greedy generation never emits EOS or an id that
cannot be detokenized, and every request runs to ``max_tokens`` — what deadline tests and throughput
benches need.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2.5's template, without tools: a default system turn when the caller gives none.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_BUILTIN_TEXT = """\
The O-RAN Alliance defines an open, intelligent radio access network. The near-real-time RAN Intelligent
Controller (near-RT RIC) hosts xApps that control E2 nodes (O-CU-CP, O-CU-UP, O-DU, O-eNB) through the E2
interface with control loops between 10 ms and 1 s. The non-real-time RIC, part of the Service Management and
Orchestration framework (SMO), runs rApps and sends A1 policies to the near-RT RIC. The O1 interface carries
configuration, fault and performance management; the O2 interface manages the O-Cloud. E2 service models
such as E2SM-KPM and E2SM-RC describe reports, insertions, policies and controls. The open fronthaul links
the O-DU and the O-RU using the 7.2x split. xApps subscribe through the subscription manager, exchange
messages over RMR, and keep state in the shared data layer (SDL).
"""


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int  # of the model; the tokenizer may have fewer ids
    tokenizer_vocab: int
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 4096


# Head size 32 (the CPU attention kernels reject 16); GQA like Qwen2.5.
TINY = Shape(128, 256, 2, 4, 2, vocab_size=2048, tokenizer_vocab=2048)
# Qwen2.5-0.5B-Instruct's shape: 24 layers, hidden 896, 14 heads / 2 KV heads (head size 64), vocab 151936.
QWEN25_05B = Shape(896, 4864, 24, 14, 2, vocab_size=151936, tokenizer_vocab=8192, max_position_embeddings=32768)
SHAPES = {"tiny": TINY, "qwen2.5-0.5b": QWEN25_05B}


def default_corpus() -> list[str]:
    texts = [_BUILTIN_TEXT]
    kb = Path(__file__).resolve().parent.parent / "store" / "kb"
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted(kb.glob("*.md"))]
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> object:
    """A byte-level BPE tokenizer (as Qwen's) with the ChatML special tokens, for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def build_random_qwen2(
    out_dir: Path,
    shape: Shape | str = TINY,
    *,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a random-weight ``Qwen2ForCausalLM`` bf16 checkpoint with a local tokenizer to ``out_dir``.

    Written to a temporary folder and renamed into place; an existing complete checkpoint is kept.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if isinstance(shape, str):
        shape = SHAPES[shape]
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(), shape.tokenizer_vocab)
        n_tok = len(tokenizer)  # type: ignore[arg-type]
        if n_tok > shape.vocab_size:
            raise ValueError(f"tokenizer has {n_tok} ids but the model only {shape.vocab_size}")
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")  # type: ignore[attr-defined]
        pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # type: ignore[attr-defined]
        config = Qwen2Config(
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_hidden_layers,
            num_attention_heads=shape.num_attention_heads,
            num_key_value_heads=shape.num_key_value_heads,
            max_position_embeddings=shape.max_position_embeddings,
            tie_word_embeddings=shape.tie_word_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            rms_norm_eps=1e-6,
            bos_token_id=pad,
            eos_token_id=eos,
            pad_token_id=pad,
            dtype=torch.bfloat16,
        )
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).bfloat16()
        with torch.no_grad():
            out = model.get_output_embeddings().weight
            special = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]  # type: ignore[attr-defined]
            out[special] = 0
            out[n_tok:] = 0
            # Tokens with no letter or digit (whitespace, punctuation) would let greedy decoding loop on
            # "\n\n\n…", which the components rightly reject as empty; tests need words to parse.
            blank = [i for i in range(n_tok) if not any(ch.isalnum() for ch in tokenizer.decode([i]))]  # type: ignore[attr-defined]
            out[blank] = 0
        model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)  # type: ignore[attr-defined]
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
