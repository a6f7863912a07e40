"""Tiny random checkpoints written the way real ones come: ``save_pretrained`` weights with a word-level
tokenizer (and processor) beside them, for loading back by path. Each builder takes a directory and returns it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = "a the cat dog sat on mat red blue green cube sphere what is this describe picture left right of".split()


def word_tokenizer(
    vocab_list: list[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str = "<pad>",
    unk: str = "<unk>",
    add_bos: bool = False,
    cls_sep: tuple[str, str] | None = None,
    digits: bool = False,
    **special: object,
):
    """A ``PreTrainedTokenizerFast`` over a word-level vocabulary built with the ``tokenizers`` library.

    ``add_bos`` prepends ``bos`` (Llama-style); ``cls_sep`` wraps as ``[CLS] … [SEP]`` (BERT-style); ``digits``
    splits numbers into single digits (Emu3 writes image sizes as ``"2*2"``); ``special`` are passed on
    (``sep_token=…``, ``extra_special_tokens={…}``).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    splitters = [pre_tokenizers.Whitespace()] + ([pre_tokenizers.Digits(individual_digits=True)] if digits else [])
    tok.pre_tokenizer = pre_tokenizers.Sequence(splitters)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    if cls_sep:
        c, s = cls_sep
        tok.post_processor = processors.TemplateProcessing(
            single=f"{c} $A {s}", special_tokens=[(c, vocab[c]), (s, vocab[s])]
        )
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk}
    return PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in named.items() if v}, **special)


def random_image(size: tuple[int, int] = (16, 16), seed: int = 0) -> Image.Image:
    """A random RGB image of ``size`` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def tiny_llama(directory: Path, *, num_layers: int = 2, context: int = 64) -> Path:
    """A 2-layer, d=16 ``LlamaForCausalLM`` with a BOS-adding word-level tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = ["<pad>", "<unk>", "<s>", "</s>", *WORDS]
    tokenizer = word_tokenizer(vocab, bos="<s>", eos="</s>", add_bos=True)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=num_layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=context,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_bert(directory: Path, *, context: int = 32) -> Path:
    """A 2-layer, d=16 ``BertModel`` with a ``[CLS] … [SEP]`` word-level tokenizer."""
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]
    tokenizer = word_tokenizer(
        vocab, pad="[PAD]", unk="[UNK]", cls_sep=("[CLS]", "[SEP]"), cls_token="[CLS]", sep_token="[SEP]"
    )
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=context,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- Emu3 ------------------------------------------------------------------------------------------------------

EMU3_SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>", "<image>", "<|image start|>", "<|image end|>",
                "<|image token|>", "<|extra_200|>", "<|extra_201|>"]  # fmt: skip
EMU3_CODEBOOK = 16


def tiny_emu3(directory: Path) -> Path:
    """A 2-layer, d=32 ``Emu3ForConditionalGeneration`` whose VQ turns a 16×16 image into a 2×2 grid
    (2 × (2 + 1) = 6 image tokens with the end-of-line markers), with its ``Emu3Processor``."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration, Emu3ImageProcessor, Emu3Processor, Emu3TextConfig

    visual = [f"<|visual token{i:06d}|>" for i in range(EMU3_CODEBOOK)]
    vocab = [*EMU3_SPECIAL, *visual, *WORDS, *"0123456789*"]
    tokenizer = word_tokenizer(
        vocab, bos="<bos>", eos="<eos>", digits=True,
        extra_special_tokens={"image_token": "<image>", "boi_token": "<|image start|>",
                              "eoi_token": "<|image end|>", "image_wrapper_token": "<|image token|>",
                              "eof_token": "<|extra_201|>"},
    )  # fmt: skip
    processor = Emu3Processor(
        image_processor=Emu3ImageProcessor(min_pixels=16 * 16, max_pixels=16 * 16, spatial_factor=8),
        tokenizer=tokenizer,
    )
    text_config = Emu3TextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=96,
        pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    vq_config = {"codebook_size": EMU3_CODEBOOK, "temporal_downsample_factor": 1, "base_channels": 32,
                 "channel_multiplier": [1, 1, 1, 1], "hidden_size": 32, "attn_resolutions": [],
                 "num_res_blocks": 1, "embed_dim": 4, "latent_channels": 4}  # fmt: skip
    vocabulary_map = {w: i for i, w in enumerate(vocab)}
    config = Emu3Config(text_config=text_config, vq_config=vq_config, vocabulary_map=vocabulary_map)
    torch.manual_seed(0)
    Emu3ForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# -- Chameleon -------------------------------------------------------------------------------------------------

CHAMELEON_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<racm3:break>", "<eoss>", "<reserved08706>"]
CHAMELEON_CODEBOOK = 16
CHAMELEON_IMAGE_TOKENS = 4  # a 16×16 image, downsampled 8× → 2×2


def chameleon_image_token(code: int) -> str:
    """Chameleon's vocabulary name of VQ code ``code``: ``IMGIMG`` + digits written as letters A–J + ``Z``."""
    return "IMGIMG" + "".join(chr(ord("A") + int(c)) for c in str(code)) + "Z"


def tiny_chameleon(directory: Path) -> Path:
    """A 2-layer, d=32 ``ChameleonForConditionalGeneration`` (4 image tokens per 16×16 image) with its
    ``ChameleonProcessor`` (PIL image backend)."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonProcessor
    from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil

    visual = [chameleon_image_token(i) for i in range(CHAMELEON_CODEBOOK)]
    vocab = [*CHAMELEON_SPECIAL, *visual, *WORDS]
    tokenizer = word_tokenizer(
        vocab, bos="<s>", eos="</s>", add_bos=True, sep_token="<reserved08706>",
        extra_special_tokens={"image_token": "<image>", "boi_token": "<racm3:break>", "eoi_token": "<eoss>"},
    )  # fmt: skip
    image_processor = ChameleonImageProcessorPil(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = ChameleonProcessor(image_processor, tokenizer, image_seq_length=CHAMELEON_IMAGE_TOKENS)
    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=2, eos_token_id=3, vocabulary_map={w: i for i, w in enumerate(vocab)},
        vq_config={"embed_dim": 4, "num_embeddings": CHAMELEON_CODEBOOK, "latent_channels": 4, "resolution": 16,
                   "base_channels": 32, "channel_multiplier": [1, 1, 1, 1], "num_res_blocks": 1,
                   "attn_resolutions": []},
    )  # fmt: skip
    torch.manual_seed(0)
    ChameleonForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# -- Janus ------------------------------------------------------------------------------------------------------

JANUS_D, JANUS_LAYERS, JANUS_CONTEXT = 32, 2, 64
JANUS_IMAGE_SIZE, JANUS_PATCH = 32, 8
JANUS_IMAGE_TOKENS = (JANUS_IMAGE_SIZE // JANUS_PATCH) ** 2  # 16
JANUS_SPECIAL = ["<unk>", "<pad>", "<bos>", "<eos>", "<image_placeholder>", "<begin_of_image>", "<end_of_image>"]
JANUS_WORDS = "<|User|>: <|Assistant|>: a the cat dog sat on mat red blue image of is what shown in this picture".split()
JANUS_CHAT_TEMPLATE = (
    "{% for message in messages %}<|User|>: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image_placeholder>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


JANUS_SHAPE = {"d_model": JANUS_D, "layers": JANUS_LAYERS, "context": JANUS_CONTEXT, "image_tokens": JANUS_IMAGE_TOKENS}


def _janus_tokenizer():
    """A word-level tokenizer with the special tokens Janus' processor needs (BOS prepended)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(JANUS_SPECIAL + JANUS_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "image_token": "<image_placeholder>",
            "boi_token": "<begin_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )


def tiny_janus(directory: Path, system_prompt: bool = False) -> Path:
    """Build a random tiny Janus + processor and ``save_pretrained`` both into ``directory``; ``system_prompt``:
    the processor prepends Janus-Pro's default system prompt to text-generation prompts, as the released one does."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessorPil, JanusProcessor

    tokenizer = _janus_tokenizer()
    text = dict(
        model_type="llama", vocab_size=len(tokenizer), hidden_size=JANUS_D, intermediate_size=64,
        num_hidden_layers=JANUS_LAYERS, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=JANUS_CONTEXT,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2.0, image_size=JANUS_IMAGE_SIZE,
        patch_size=JANUS_PATCH, projection_dim=JANUS_D, num_image_tokens=JANUS_IMAGE_TOKENS,
    )  # fmt: skip
    vq = dict(
        embed_dim=8, num_embeddings=64, latent_channels=8, base_channels=32, channel_multiplier=[1, 2],
        num_res_blocks=1, projection_dim=JANUS_D, image_token_embed_dim=JANUS_D,
    )  # fmt: skip
    config = JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = JanusForConditionalGeneration(config).eval()
    images = JanusImageProcessorPil(
        size={"height": JANUS_IMAGE_SIZE, "width": JANUS_IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = JanusProcessor(
        image_processor=images, tokenizer=tokenizer, chat_template=JANUS_CHAT_TEMPLATE, num_image_tokens=JANUS_IMAGE_TOKENS,
        use_default_system_prompt=system_prompt,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
                "<|endoftext|>"]  # fmt: skip


def byte_level_qwen_tokenizer(special: list[str] | None = None):
    """A Qwen2 byte-level BPE tokenizer over the 256 byte symbols, two merges (``Ġc``, ``at``) and Qwen2.5's special
    tokens: what ``AutoTokenizer`` gives for a Qwen2.5 folder, small enough for a random model."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    merges = [("Ġ", "c"), ("a", "t")]
    vocab.update({"Ġc": len(vocab), "at": len(vocab) + 1})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": list(special or QWEN_SPECIAL)})
    return tokenizer
