"""Tokenizers of other model families than the tiny ladder's and Qwen's."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from w2s_ray.models.tokenizer import load_tokenizer
from w2s_ray.runtime.encoding import encode, encode_pairs


def saved_tokenizer(folder, **specials) -> str:
    core = Tokenizer(models.WordLevel({"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5},
                                      unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", **specials).save_pretrained(folder)
    return str(folder)


def test_a_family_without_pad_token_pads_with_eos(tmp_path):
    path = saved_tokenizer(tmp_path, bos_token="<s>", eos_token="</s>")  # as Llama ships
    tok = load_tokenizer(path)
    assert tok.pad_token_id == tok.eos_token_id == 1
    sft = encode(tok, ["a b c", "a"], ["b", "c a"], max_length=16)
    assert sft["input_ids"].tolist()[1] == [0, 3, 5, 3, 1, 1]  # BOS, prompt, answer, EOS, pad
    assert sft["attention_mask"].tolist()[1] == [1, 1, 1, 1, 1, 0]
    scored = encode_pairs(tok, ["a b c", "a"], ["b", "c"], max_length=16)
    assert scored["attention_mask"].sum(1).tolist() == [5, 3]


def test_a_tokenizer_with_neither_pad_nor_eos_is_refused_by_name(tmp_path):
    path = saved_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="neither pad_token nor eos_token"):
        load_tokenizer(path)
