"""Turn an Example into the model's prompt: data.prompt_template, the tokenizer's chat template (text prompts as
one user turn, chat prompts as their messages, system messages kept), and token ids. Data loading, SFT, rollouts
and the environments all render prompts through these, so a prompt reads the same everywhere."""

from __future__ import annotations

from grpo_cli.config import DataConfig
from grpo_cli.data import Example
from grpo_cli.errors import GrpoError


def question_text(example: Example) -> str:
    """The question as plain text: a chat prompt's messages, one per line."""
    if example.conversational:
        return "\n".join(message["content"] for message in example.question)
    return example.question


def fill_template(example: Example, data: DataConfig) -> str | list[dict]:
    """data.prompt_template with {prompt} replaced by the question; a chat prompt's messages as they are."""
    if example.conversational:
        return example.question
    return data.prompt_template.replace("{prompt}", example.question)


def format_prompt(example: Example, tokenizer, data: DataConfig) -> str:
    """The prompt's text: a chat prompt through the tokenizer's chat template; text through data.prompt_template,
    then the chat template (as one user turn) when data.use_chat_template is set. Generation prompt added."""
    if example.conversational:
        return chat_text(example.question, tokenizer)
    text = fill_template(example, data)
    return chat_text([{"role": "user", "content": text}], tokenizer) if data.use_chat_template else text


def chat_text(messages: list[dict], tokenizer, tools: list[dict] | None = None) -> str:
    """`messages` in the tokenizer's chat template, generation prompt added; `tools`: tool schemas for a
    template that lists them (multi-turn rollouts' chat form)."""
    if not getattr(tokenizer, "chat_template", None):
        raise GrpoError(
            f"the tokenizer {tokenizer.name_or_path!r} has no chat template, which chat prompts need "
            "(data.use_chat_template=true, or chat messages in data.prompt_field); set data.use_chat_template=false "
            "and give prompts as text, or use a chat model"
        )
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)


def encode_prompt(example: Example, tokenizer, data: DataConfig) -> list[int]:
    """Token ids of the formatted prompt (prompt_token_ids)."""
    chat = example.conversational or data.use_chat_template
    return prompt_token_ids(format_prompt(example, tokenizer, data), tokenizer, chat)


def prompt_token_ids(text: str, tokenizer, chat_template: bool) -> list[int]:
    """Token ids of a prompt's text. A chat template writes its own special tokens (BOS among them), so the
    tokenizer adds none then; a plain template gets the tokenizer's usual ones (BOS for the tiny model)."""
    return tokenizer(text, add_special_tokens=not chat_template)["input_ids"]
