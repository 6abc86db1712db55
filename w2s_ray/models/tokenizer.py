"""The tiny ladder's shared word-level tokenizer, and where a checkpoint keeps its tokenizer.

transformers 5 loads any folder whose config.json says `qwen2` with `Qwen2Tokenizer` whatever
tokenizer_config.json names, and that class rebuilds a byte-level BPE around the vocabulary,
which would split our words into characters. So checkpoints of the tiny ladder (and models
fine-tuned from them) keep their tokenizer in a `tokenizer/` subfolder without a model config;
`tokenizer_path` finds it there, and a hub checkpoint keeps its tokenizer beside the weights.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<unk>", "<eos>")
SUBFOLDER = "tokenizer"


def build_tokenizer(words: set[str]) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate([*SPECIALS, *sorted(words - set(SPECIALS))])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # WordPiece's decoder joins words with spaces (none carries the "##" prefix).
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    # BOS is EOS: in the packed pretraining stream every document follows an <eos>.
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", bos_token="<eos>"
    )


def prompt_ids(tok: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """A prompt's ids, led by the tokenizer's BOS where it has one (Qwen's has none)."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return [tok.bos_token_id, *ids] if tok.bos_token_id is not None else ids


def tokenizer_path(model_path: str) -> str:
    local = Path(model_path) / SUBFOLDER
    return str(local) if (local / "tokenizer.json").exists() else model_path


def load_tokenizer(model_path: str, **kwargs) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, padding with EOS where it names no pad token (Llama, Mistral,
    GPT-2 families): every padded batch needs a pad id, and the mask hides it anyway."""
    tok = AutoTokenizer.from_pretrained(tokenizer_path(model_path), **kwargs)
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"tokenizer of {model_path}: neither pad_token nor eos_token is set; "
                             "padding needs one of them")
        tok.pad_token = tok.eos_token
    return tok


def save_checkpoint(model, tok: PreTrainedTokenizerBase, folder: str | Path, own_subfolder: bool,
                    state_dict: dict | None = None) -> None:
    """save_pretrained of both; the tokenizer goes to `tokenizer/` when the base kept it there.
    `state_dict` is the gathered full weights of a sharded (FSDP) model."""
    model.save_pretrained(folder, state_dict=state_dict)
    tok.save_pretrained(Path(folder) / SUBFOLDER if own_subfolder else folder)
