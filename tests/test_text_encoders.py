"""Language encoders (avpet_core.backbones.text, .micro_text) and the synthetic text corpus.

The Hugging Face tests build tiny random models and tokenizers from files made here (no download;
the hub is offline, see conftest.py) and skip when ``transformers`` is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from avpet_core.backbones import micro_text
from avpet_core.backbones.micro_text import (
    CLS_ID,
    MASK_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    MicroTextConfig,
    MicroTextEncoder,
    MicroTextTransformer,
    TextPretrainConfig,
    WordTokenizer,
    build_micro_text_encoder,
    cache_paths,
    mask_tokens,
    pretrain_micro_text,
    pretrained_micro_text,
    pretrained_micro_text_mlm,
)
from avpet_core.backbones.text import (
    KNOWN_CONFIGS,
    MICRO_TEXT,
    TextEncoder,
    TextEncoderError,
    additive_mask,
)
from avpet_core.backbones import create_text_encoder
from avpet_core.data.music_avqa import QUESTION_TYPES, substitute_placeholders, tokenise
from avpet_core.data.synthetic import SynthAVQAConfig, scene_questions, synth_avqa_scene
from avpet_core.data.synthetic.avqa import TEMPLATES
from avpet_core.data.synthetic.text import (
    TEXT_KINDS,
    TextCorpusConfig,
    corpus_vocabulary,
    question_split,
    question_texts,
    segments_phrase,
    text_corpus,
)
from avpet_core.files import CACHE_ENV_VAR

QUESTIONS = [
    "Is the drum louder than the bell?",
    "How many instruments can be heard in the video?",
    "Which instrument in the video starts playing before the cello?",
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _by_hand(encoder: TextEncoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = encoder.embed(ids)
    for index in range(encoder.depth):
        x = encoder.block(index, x, mask)
    return encoder.final(x)


# --------------------------------------------------------------------------------------------
# the corpus


def test_every_question_synthavqa_asks_is_in_the_corpus():
    texts = set(question_texts())
    assert len(texts) == len(question_texts())  # no duplicates
    config = SynthAVQAConfig()
    asked = set()
    for split in ("train", "test"):
        for index in range(150):
            scene, _ = synth_avqa_scene(config, split, index)
            for type_index, values, _ in scene_questions(scene):
                asked.add(substitute_placeholders(TEMPLATES[QUESTION_TYPES[type_index]], values))
    assert asked <= texts
    assert len(asked) > 0.9 * len(texts)  # and the corpus holds little that is never asked


def test_corpus_is_deterministic_by_seed_and_splits_differ():
    config = TextCorpusConfig(num_videos=20, num_scenes=20, num_eval_videos=10, num_eval_scenes=10)
    train = text_corpus(config, "train")
    assert train == text_corpus(config, "train")
    assert tuple(train) == TEXT_KINDS
    test = text_corpus(config, "test")
    assert train["ave"][: len(test["ave"])] != test["ave"] and train["avqa"][: len(test["avqa"])] != test["avqa"]
    assert not set(train["question"]) & set(test["question"])
    assert set(train["question"]) | set(test["question"]) == set(question_texts())
    assert len(test["question"]) == round(0.2 * len(question_texts()))
    assert text_corpus(dataclasses.replace(config, seed=1), "train")["ave"] != train["ave"]
    val = text_corpus(config, "val")
    assert val["question"] == test["question"] and val["ave"] != test["ave"]
    splits = question_split(config)
    assert splits["held_out"] == test["question"]


def test_corpus_words_are_all_in_the_vocabulary():
    vocabulary = set(corpus_vocabulary())
    corpus = text_corpus(TextCorpusConfig(num_videos=200, num_scenes=200), "train")
    used = {w for texts in corpus.values() for text in texts for w in tokenise(text)}
    assert used <= vocabulary
    assert len(vocabulary - used) < 0.05 * len(vocabulary)
    assert {"drum", "louder", "segments", "striped", "warm", "sweep", "left", "ten"} <= used


def test_descriptions_read_as_the_ground_truth():
    assert segments_phrase(2, 5) == "in segments three to five"
    assert segments_phrase(9, 10) == "in segment ten"
    corpus = text_corpus(TextCorpusConfig(num_videos=30, num_scenes=30), "train")
    assert any(
        re.fullmatch(r"the video shows a (warm|cool) \w+ \w+ that sounds .+ at a .*pitch", t) for t in corpus["ave"]
    )
    assert any(
        re.fullmatch(r"the \w+ (on the left|in the middle|on the right) plays (loudly|quietly) in segments? .+", t)
        for t in corpus["avqa"]
    )


# --------------------------------------------------------------------------------------------
# the word tokenizer


def test_tokenizer_round_trip_and_unknown_words():
    tokenizer = WordTokenizer()
    assert tokenizer.tokens[:4] == SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[MASK]", "[CLS]")
    assert (PAD_ID, UNK_ID, MASK_ID, CLS_ID) == (0, 1, 2, 3)
    ids, mask = tokenizer.encode(QUESTIONS, 16)
    assert ids.shape == mask.shape == (3, 16) and ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert (ids[:, 0] == CLS_ID).all()
    assert torch.equal(mask, ids != PAD_ID)
    assert mask[0].sum() == 1 + 7
    assert tokenizer.decode(ids) == [" ".join(tokenise(q)) for q in QUESTIONS]
    assert UNK_ID not in ids
    unknown, _ = tokenizer.encode(["Is the kazoo louder than the theremin?"], 10)
    assert unknown[0, :8].tolist() == [
        CLS_ID,
        tokenizer.ids["is"],
        tokenizer.ids["the"],
        UNK_ID,
        tokenizer.ids["louder"],
        tokenizer.ids["than"],
        tokenizer.ids["the"],
        UNK_ID,
    ]
    assert tokenizer.decode(unknown) == ["is the [UNK] louder than the [UNK]"]
    cut, cut_mask = tokenizer.encode(QUESTIONS[:1], 4)
    assert cut.shape == (1, 4) and cut_mask.all()
    empty, empty_mask = tokenizer.encode([""], 3)
    assert empty.tolist() == [[CLS_ID, PAD_ID, PAD_ID]] and empty_mask.tolist() == [[True, False, False]]
    with pytest.raises(TypeError, match="list of texts"):
        tokenizer.encode("one string", 8)


def test_masking_follows_bert():
    tokenizer = WordTokenizer()
    ids, _ = tokenizer.encode(list(question_texts()) * 20, 16)
    inputs, targets = mask_tokens(ids, 0.15, len(tokenizer), _gen(0))
    chosen = targets != -100
    words = ids >= len(SPECIAL_TOKENS)
    assert not (chosen & ~words).any()  # never [PAD] or [CLS]
    assert chosen.any(-1).all()  # at least one per text
    assert torch.equal(targets[chosen], ids[chosen])
    assert 0.14 < chosen.sum() / words.sum() < 0.25
    masked = (inputs[chosen] == MASK_ID).double().mean()
    assert 0.7 < masked < 0.9
    assert torch.equal(inputs[~chosen], ids[~chosen])
    eval_inputs, _ = mask_tokens(ids, 0.15, len(tokenizer), _gen(0), replace=False)
    assert (eval_inputs[chosen] == MASK_ID).all()


# --------------------------------------------------------------------------------------------
# the micro text encoder


def test_micro_text_forward_is_embed_blocks_final():
    torch.manual_seed(0)
    encoder = create_text_encoder(MICRO_TEXT)
    assert isinstance(encoder, MicroTextEncoder) and isinstance(encoder, TextEncoder)
    assert (encoder.width, encoder.depth, encoder.num_heads, encoder.max_length) == (96, 4, 3, 32)
    assert encoder.vocab_size == len(encoder.tokenizer) == 4 + len(corpus_vocabulary())
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 16)
    with torch.no_grad():
        out = encoder(ids, mask)
        assert out.shape == (3, 16, 96)
        assert torch.equal(out, _by_hand(encoder, ids, mask))
        assert torch.equal(
            encoder.embed(ids), encoder.model.token_embedding(ids) + encoder.model.position_embedding[:, :16]
        )
        assert torch.equal(encoder.final(out), encoder.model.norm(out))
    with pytest.raises(IndexError, match=r"blocks 0\.\.3, got block 4"):
        encoder.block(4, out, mask)


def test_micro_text_padding_does_not_change_real_tokens():
    torch.manual_seed(1)
    encoder = build_micro_text_encoder()
    tokenizer = encoder.tokenizer
    with torch.no_grad():
        for question in QUESTIONS:
            short, short_mask = tokenizer.encode([question], len(tokenizer.ids_of(question)))
            long, long_mask = tokenizer.encode([question], 32)
            assert short_mask.all() and not long_mask.all()
            a, b = encoder(short, short_mask), encoder(long, long_mask)
            torch.testing.assert_close(b[:, : short.shape[1]], a, rtol=0, atol=1e-5)
        batch, batch_mask = tokenizer.encode(QUESTIONS, 16)  # and in a batch with others of other lengths
        together = encoder(batch, batch_mask)
        for row, question in enumerate(QUESTIONS):
            alone, alone_mask = tokenizer.encode([question], 16)
            real = batch_mask[row]
            torch.testing.assert_close(together[row, real], encoder(alone, alone_mask)[0, real], rtol=0, atol=1e-5)


def test_micro_text_is_frozen_and_stays_in_eval_mode():
    encoder = build_micro_text_encoder()
    assert all(not p.requires_grad for p in encoder.parameters())
    assert not encoder.training
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    holder = torch.nn.ModuleDict({"text": encoder, "adapter": torch.nn.Linear(96, 96)})
    holder.train()
    assert holder["adapter"].training and not encoder.training
    # gradients flow through the frozen blocks to what feeds them
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 16)
    x = encoder.embed(ids).requires_grad_(True)
    encoder.final(encoder.block(0, x, mask)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())


def test_micro_text_signature_and_meta_device():
    encoder = create_text_encoder(MICRO_TEXT, device="meta")
    assert all(p.is_meta for p in encoder.parameters())
    signature = encoder.signature()
    assert signature == {
        "architecture": "micro_text",
        "width": 96,
        "depth": 4,
        "num_heads": 3,
        "vocab_size": encoder.vocab_size,
        "max_length": 32,
        "ffn_dim": 192,
    }
    json.dumps(signature)
    assert sum(p.numel() for p in encoder.parameters()) == sum(
        p.numel() for p in build_micro_text_encoder().parameters()
    )


def test_micro_text_refuses_too_long_input_and_a_bad_max_length():
    encoder = build_micro_text_encoder(MicroTextConfig(max_length=8))
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 12)
    with pytest.raises(TextEncoderError, match="12 tokens, more than its 8 positions"):
        encoder(ids, mask)
    with pytest.raises(TextEncoderError, match=r"max_length must be in \[1, 8\]"):
        encoder.encode(QUESTIONS, 12)
    ids, mask = encoder.encode(QUESTIONS)
    assert ids.shape == (3, 8)


def test_micro_text_tokenizer_must_fit_the_embedding_table():
    small = MicroTextTransformer(MicroTextConfig(), vocab_size=50)
    with pytest.raises(
        TextEncoderError,
        match=r"tokenizer WordTokenizer\(vocab_size=105\) has 105 tokens, but the "
        r"embedding table of micro_text \(50 rows\) has 50 rows",
    ):
        MicroTextEncoder(small, WordTokenizer())
    with pytest.raises(TextEncoderError, match="vocabulary size mismatch: tokenizer WordTokenizer"):
        MicroTextEncoder(
            MicroTextTransformer(MicroTextConfig(), vocab_size=len(WordTokenizer())), WordTokenizer(["drum"])
        )


# --------------------------------------------------------------------------------------------
# pretraining and loading it (tiny configurations; the cache: tests/test_cached_pretraining.py)


def test_tiny_pretraining_runs_and_records(tiny_text_config):
    config = tiny_text_config
    model, record = pretrain_micro_text(config, progress=False)
    assert not model.training
    assert [h["step"] for h in record["history"]] == [3, 6]
    assert record["held_out_accuracy"] == record["history"][-1]["held_out_accuracy"]["all"]
    assert set(record["held_out_accuracy_by_kind"]) == set(TEXT_KINDS)
    baseline = record["baseline_most_frequent_word"]
    assert baseline["word"] in corpus_vocabulary() and 0 <= baseline["all"] <= 1
    assert record["corpus"]["train"]["question"]["texts"] == len(question_split()["train"])
    assert record["corpus"]["test"]["ave"]["texts"] > 4
    assert record["config"] == dataclasses.asdict(config)
    assert record["numeric_environment"]["deterministic"] is True
    assert record["vocab_size"] == len(WordTokenizer())
    json.dumps(record)
    with micro_text.deterministic_cpu(config.num_threads):
        again = micro_text.evaluate_mlm(model, config)
    assert round(again["all"], 4) == record["held_out_accuracy"]


def test_pretraining_is_deterministic_and_leaves_the_global_rng(tiny_text_config):
    torch.manual_seed(1234)
    first, record1 = pretrain_micro_text(tiny_text_config, progress=False)
    after = torch.rand(3)
    torch.manual_seed(1234)
    assert torch.equal(after, torch.rand(3))
    second, record2 = pretrain_micro_text(tiny_text_config, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert record1["history"] == record2["history"]
    other, _ = pretrain_micro_text(dataclasses.replace(tiny_text_config, seed=1), progress=False)
    assert not torch.equal(other.state_dict()["head.decoder.weight"], first.state_dict()["head.decoder.weight"])


def test_pretrained_micro_text_is_the_frozen_encoder_of_the_cached_mlm(monkeypatch, tmp_path, tiny_text_config):
    """What pretrained_micro_text adds to the cache contract (tests/test_cached_pretraining.py)."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    mlm = pretrained_micro_text_mlm(tiny_text_config, progress=False)  # trains and caches

    def fail(*args, **kwargs):
        raise AssertionError("pretrain_micro_text must not be called here")

    monkeypatch.setattr(micro_text, "pretrain_micro_text", fail)
    torch.manual_seed(7)
    encoder = pretrained_micro_text(tiny_text_config, progress=False)
    after_loading = torch.rand(2)
    torch.manual_seed(7)
    assert torch.equal(after_loading, torch.rand(2))  # loading leaves the global RNG alone
    assert isinstance(encoder, MicroTextEncoder) and all(not p.requires_grad for p in encoder.parameters())
    assert encoder.pretraining == mlm.pretraining
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 16)
    with torch.no_grad():
        assert torch.equal(encoder(ids, mask), mlm.encoder(ids, mask))
        assert mlm(ids, mask).shape == (3, 16, len(WordTokenizer()))


# --------------------------------------------------------------------------------------------
# names and errors (no transformers needed)


def test_unknown_name_is_refused_with_close_matches():
    with pytest.raises(
        TextEncoderError, match=r"unknown text encoder 'bert-base-uncase'; did you mean 'bert-base-uncased'"
    ):
        create_text_encoder("bert-base-uncase")
    with pytest.raises(TextEncoderError, match=r"unknown text encoder 'micro-text'; did you mean 'micro_text'"):
        create_text_encoder("micro-text")
    with pytest.raises(TextEncoderError, match="needs pretrained=True .* or local_dir=DIR"):
        create_text_encoder("no-such-model")
    with pytest.raises(TextEncoderError, match="takes no local_dir"):
        create_text_encoder(MICRO_TEXT, local_dir="/tmp")
    assert issubclass(TextEncoderError, ValueError)


def test_missing_transformers_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # what an environment without it gives
    with pytest.raises(TextEncoderError, match=r"need the 'transformers' package.*pip install \"avpet_core\[text\]\""):
        create_text_encoder("bert-base-uncased")


def test_the_library_imports_without_transformers():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "import avpet_core, avpet_core.backbones, avpet_core.backbones.text, avpet_core.backbones.micro_text\n"
        "from avpet_core.backbones import create_text_encoder, TextEncoderError\n"
        "e = create_text_encoder('micro_text'); print(e.depth)\n"
        "try:\n    create_text_encoder('bert-base-uncased')\n"
        "except TextEncoderError as err:\n    print('refused', err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4" and lines[1].startswith("refused ") and "transformers" in lines[1]


def test_additive_mask():
    mask = torch.tensor([[True, True, False]])
    padding = additive_mask(mask, torch.float32)
    assert padding.shape == (1, 1, 1, 3)
    assert padding[0, 0, 0, :2].tolist() == [0.0, 0.0] and padding[0, 0, 0, 2] == torch.finfo(torch.float32).min
    causal = additive_mask(mask, torch.float32, causal=True)
    assert causal.shape == (1, 1, 3, 3)
    assert (causal[0, 0] == 0).tolist() == [[True, False, False], [True, True, False], [True, True, False]]


# --------------------------------------------------------------------------------------------
# Hugging Face models (tiny, random, built here)


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers", reason="the Hugging Face tests need transformers (the 'text' extra)")


BERT_WORDS = [
    "is",
    "the",
    "drum",
    "louder",
    "than",
    "bell",
    "how",
    "many",
    "instruments",
    "can",
    "be",
    "heard",
    "in",
    "video",
    "which",
    "instrument",
    "starts",
    "playing",
    "before",
    "cello",
    "?",
]


def _bert_tokenizer(transformers, tmp_path, extra: int = 0):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS, *(f"w{i}" for i in range(extra))]
    directory = tmp_path / f"bert-vocab-{extra}"
    directory.mkdir()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return transformers.BertTokenizerFast.from_pretrained(str(directory))


def _tiny_bert(transformers, vocab_size: int, **overrides):
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=40,
        **overrides,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def _roberta_tokenizer(transformers, tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        QUESTIONS * 4,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    directory = tmp_path / "roberta-vocab"
    directory.mkdir()
    bpe.save_model(str(directory))  # vocab.json and merges.txt
    return transformers.RobertaTokenizerFast.from_pretrained(str(directory))


def _hf_reference(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def test_bert_block_by_block_equals_the_hf_model(transformers, tmp_path):
    from avpet_core.backbones.text import HFTextEncoder

    tokenizer = _bert_tokenizer(transformers, tmp_path)
    model = _tiny_bert(transformers, len(tokenizer))
    encoder = HFTextEncoder(model, tokenizer, name="tiny-bert")
    assert (encoder.width, encoder.depth, encoder.num_heads, encoder.vocab_size, encoder.max_length) == (
        32,
        3,
        4,
        len(tokenizer),
        40,
    )
    assert encoder.signature() == {
        "architecture": "bert",
        "width": 32,
        "depth": 3,
        "num_heads": 4,
        "vocab_size": len(tokenizer),
        "max_length": 40,
    }
    ids, mask = encoder.tokenizer.encode([q.lower() for q in QUESTIONS], 16)
    assert ids.shape == (3, 16) and ids.dtype == torch.int64 and mask.dtype == torch.bool and not mask.all()
    assert ids[0, 0] == tokenizer.cls_token_id
    with torch.no_grad():
        by_hand = _by_hand(encoder, ids, mask)
        torch.testing.assert_close(encoder(ids, mask), by_hand, rtol=0, atol=0)
        reference = _hf_reference(model, ids, mask)
    torch.testing.assert_close(by_hand[mask], reference[mask], rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not model.training
    assert encoder.tokenizer.decode(ids)[0].replace(" ?", "?") == "is the drum louder than the bell?"


def test_bert_with_eager_attention_too(transformers, tmp_path):
    from avpet_core.backbones.text import HFTextEncoder

    tokenizer = _bert_tokenizer(transformers, tmp_path)
    model = _tiny_bert(transformers, len(tokenizer), attn_implementation="eager")
    encoder = HFTextEncoder(model, tokenizer)
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(ids, mask)[mask], _hf_reference(model, ids, mask)[mask], rtol=1e-5, atol=1e-5
        )


def test_roberta_block_by_block_equals_the_hf_model(transformers, tmp_path):
    from avpet_core.backbones.text import HFTextEncoder

    tokenizer = _roberta_tokenizer(transformers, tmp_path)
    config = transformers.RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=42,
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1,
    )
    torch.manual_seed(0)
    model = transformers.RobertaModel(config).eval()
    encoder = HFTextEncoder(model, tokenizer, name="tiny-roberta")
    assert encoder.architecture == "roberta" and encoder.max_length == 42 - tokenizer.pad_token_id - 1
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 20)
    assert ids[0, 0] == tokenizer.bos_token_id and not mask.all()
    with torch.no_grad():
        by_hand = _by_hand(encoder, ids, mask)
        reference = _hf_reference(model, ids, mask)
    torch.testing.assert_close(by_hand[mask], reference[mask], rtol=1e-5, atol=1e-5)


def test_clip_text_block_by_block_equals_the_hf_model(transformers):
    from avpet_core.backbones.text import HFTextEncoder

    config = transformers.CLIPTextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=20,
        eos_token_id=63,
        bos_token_id=62,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(config).eval()
    encoder = HFTextEncoder(model, None, name="tiny-clip")
    assert encoder.architecture == "clip_text" and encoder.max_length == 20
    ids = torch.randint(1, 62, (3, 12), generator=_gen(0))
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 4:] = False
    ids[~mask] = 0
    with torch.no_grad():
        by_hand = _by_hand(encoder, ids, mask)
        reference = _hf_reference(model, ids, mask)
        causal_only = encoder(ids[:1], mask[:1])
        first_tokens = encoder(ids[:1, :5], mask[:1, :5])
    torch.testing.assert_close(by_hand[mask], reference[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal_only[:, :5], first_tokens, rtol=1e-5, atol=1e-5)  # causal: later tokens unseen
    with pytest.raises(TextEncoderError, match="no tokenizer"):
        encoder.tokenizer.encode(QUESTIONS, 8)


def test_local_dir_loads_model_and_tokenizer(transformers, tmp_path):
    tokenizer = _bert_tokenizer(transformers, tmp_path)
    model = _tiny_bert(transformers, len(tokenizer))
    directory = tmp_path / "saved"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    encoder = create_text_encoder("anything", local_dir=directory)
    assert encoder.name == str(directory)
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(ids, mask)[mask], _hf_reference(model, ids, mask)[mask], rtol=1e-5, atol=1e-5
        )


def test_local_dir_reads_the_text_tower_of_a_saved_clip_model(transformers, tmp_path):
    """A CLIP checkpoint holds both towers (model_type 'clip'): the text tower alone is loaded."""
    tokenizer = _bert_tokenizer(transformers, tmp_path)  # any tokenizer of the right size will do here
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=20,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    vision = dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=16
    )
    torch.manual_seed(0)
    clip = transformers.CLIPModel(
        transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).eval()
    directory = tmp_path / "clip"
    clip.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    encoder = create_text_encoder("anything", local_dir=directory)
    assert encoder.architecture == "clip_text" and encoder.depth == 2 and encoder.width == 32
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in clip.text_model.parameters())
    ids, mask = encoder.tokenizer.encode(QUESTIONS, 12)
    with torch.no_grad():
        reference = clip.text_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(encoder(ids, mask)[mask], reference[mask], rtol=1e-5, atol=1e-5)


def test_local_dir_errors(transformers, tmp_path):
    with pytest.raises(TextEncoderError, match="local model directory not found"):
        create_text_encoder("bert-base-uncased", local_dir=tmp_path / "missing")
    with pytest.raises(TextEncoderError, match=r"no model here \(config.json missing\)"):
        create_text_encoder("bert-base-uncased", local_dir=tmp_path)
    tokenizer = _bert_tokenizer(transformers, tmp_path)
    model = _tiny_bert(transformers, len(tokenizer))
    only_config = tmp_path / "config-only"
    model.config.save_pretrained(only_config)
    with pytest.raises(TextEncoderError, match="no model weights here"):
        create_text_encoder("bert-base-uncased", local_dir=only_config)
    no_tokenizer = tmp_path / "no-tokenizer"
    model.save_pretrained(no_tokenizer)
    with pytest.raises(TextEncoderError, match="no tokenizer here"):
        create_text_encoder("bert-base-uncased", local_dir=no_tokenizer)
    mismatched = tmp_path / "mismatched"
    model.save_pretrained(mismatched)
    _bert_tokenizer(transformers, tmp_path, extra=5).save_pretrained(mismatched)
    with pytest.raises(
        TextEncoderError,
        match=rf"tokenizer .* has {len(tokenizer) + 5} tokens, but the embedding table "
        rf"of {re.escape(str(mismatched))} has {len(tokenizer)} rows",
    ):
        create_text_encoder("bert-base-uncased", local_dir=mismatched)


def test_mismatched_tokenizers_are_refused(transformers, tmp_path):
    from avpet_core.backbones.text import HFTextEncoder

    tokenizer = _bert_tokenizer(transformers, tmp_path)
    bigger = _bert_tokenizer(transformers, tmp_path, extra=3)
    model = _tiny_bert(transformers, len(tokenizer))
    with pytest.raises(
        TextEncoderError,
        match=rf"has {len(bigger)} tokens, but the embedding table of tiny has "
        rf"{len(tokenizer)} rows: ids {len(tokenizer)}..{len(bigger) - 1} would index past it",
    ):
        HFTextEncoder(model, bigger, name="tiny")
    larger_model = _tiny_bert(transformers, len(tokenizer) + 10)
    with pytest.raises(
        TextEncoderError,
        match=rf"vocabulary size mismatch: tokenizer .* has {len(tokenizer)} tokens, "
        rf"the embedding table of tiny {len(tokenizer) + 10} rows",
    ):
        HFTextEncoder(larger_model, tokenizer, name="tiny")


def test_unsupported_hf_models_are_refused(transformers):
    from avpet_core.backbones.text import HFTextEncoder

    config = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=32, n_positions=16)
    with pytest.raises(TextEncoderError, match="model type 'gpt2' is not supported; supported: bert, clip"):
        HFTextEncoder(transformers.GPT2Model(config))


def test_known_configs_count_parameters_on_the_meta_device_without_a_download(transformers):
    bert = create_text_encoder("bert-base-uncased", device="meta")
    assert all(p.is_meta for p in bert.parameters())
    assert sum(p.numel() for p in bert.parameters()) == 109_482_240  # 109.5M, as everyone counts BERT-base
    assert bert.signature() == {
        "architecture": "bert",
        "width": 768,
        "depth": 12,
        "num_heads": 12,
        "vocab_size": 30522,
        "max_length": 512,
    }
    with pytest.raises(TextEncoderError, match="no tokenizer"):
        bert.tokenizer.encode(QUESTIONS, 8)
    assert sum(p.numel() for p in create_text_encoder("roberta-base", device="meta").parameters()) == 124_645_632
    clip = create_text_encoder("openai/clip-vit-base-patch32", device="meta")
    assert sum(p.numel() for p in clip.parameters()) == 63_165_952
    assert clip.signature()["architecture"] == "clip_text" and clip.max_length == 77
    assert set(KNOWN_CONFIGS) >= {"bert-base-uncased", "google-bert/bert-base-uncased", "FacebookAI/roberta-base"}


def test_a_random_known_model_runs_on_cpu(transformers):
    torch.manual_seed(0)
    encoder = create_text_encoder("openai/clip-vit-base-patch32")
    ids = torch.randint(0, 49406, (1, 6), generator=_gen(1))
    mask = torch.ones(1, 6, dtype=torch.bool)
    with torch.no_grad():
        assert encoder(ids, mask).shape == (1, 6, 512)


def test_pretrained_download_fails_clearly_offline(transformers):
    with pytest.raises(TextEncoderError, match="bert-base-uncased: could not download .* pass local_dir=DIR"):
        create_text_encoder("bert-base-uncased", pretrained=True)


# --------------------------------------------------------------------------------------------
# avpet pretrain --text (never the default pretraining)


def test_cli_pretrain_text_reports_the_record(capsys, monkeypatch, tmp_path, tiny_text_config):
    from avpet_core import cli

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    real = micro_text.pretrained_micro_text
    calls = []

    def tiny(config=None, **kwargs):
        calls.append(kwargs)
        return real(tiny_text_config, **kwargs)

    monkeypatch.setattr(micro_text, "pretrained_micro_text", tiny)
    assert cli.main(["pretrain", "--text", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    record = json.loads(cache_paths(tiny_text_config)[1].read_text())
    assert result["held_out_accuracy"] == record["held_out_accuracy"]
    assert result["baseline_most_frequent_word"] == record["baseline_most_frequent_word"]
    assert result["weights"] == str(cache_paths(TextPretrainConfig())[0])
    assert calls == [{"retrain": False, "progress": False}]
    assert cli.main(["pretrain", "--text", "--retrain"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("micro text encoder: held-out masked-word accuracy ") and "(always '" in out
    assert calls[-1] == {"retrain": True, "progress": True}


def test_cli_pretrain_text_unwritable_cache_exits_2(capsys, monkeypatch, tmp_path):
    from avpet_core import cli

    blocker = tmp_path / "file"
    blocker.write_text("a file")
    monkeypatch.setenv(CACHE_ENV_VAR, str(blocker / "sub"))
    monkeypatch.setattr(
        micro_text, "pretrain_micro_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained"))
    )
    assert cli.main(["pretrain", "--text", "--json"]) == 2
    assert "avpet pretrain: error: " in capsys.readouterr().err
