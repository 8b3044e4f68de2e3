"""A tiny random Llama and two random LoRA adapters, laid out as the AI Toolkit lays out the
share: for tests and the demo, built entirely in code (no hub)."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_PATH = "model-cache/loraplane/tiny-llama"
ADAPTER_PATH = "models/qlora/qlora/gpu_model/adapter"
SECOND_ADAPTER_PATH = "models/loraplane-demo/second-adapter"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_CORPUS = [
    "Hello! How can I help you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Your invoice is ready; billing questions go to the support team.",
    "Adapters are small: a few megabytes of low-rank weights on top of a base model.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "<pad>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS * 8, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="<|end|>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_model(model_dir: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


def write_random_adapter(
    model_dir: Path,
    adapter_dir: Path,
    *,
    seed: int,
    base_model_name: str = "loraplane/tiny-llama",
    rank: int = 8,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> None:
    """A LoRA adapter with random (not zero) weights, so that it visibly changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules), init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    with torch.no_grad():  # big enough to dominate a random base model's logits
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.mul_(4.0)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_dir))
    # Name the base as a hub id, as a real fine-tune does, not this machine's path.
    import json

    config_file = adapter_dir / "adapter_config.json"
    document = json.loads(config_file.read_text())
    document["base_model_name_or_path"] = base_model_name
    config_file.write_text(json.dumps(document, indent=2))


def make_tiny_share(root: Path) -> dict[str, Path]:
    """The AI Toolkit layout under ``root``: the model, the adapter being served, and a
    second adapter to drop in for a hot reload."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = root / TINY_MODEL_PATH
    write_tiny_model(model_dir)
    write_random_adapter(model_dir, root / ADAPTER_PATH, seed=1)
    write_random_adapter(model_dir, root / SECOND_ADAPTER_PATH, seed=2)
    return {"model": model_dir, "adapter": root / ADAPTER_PATH, "second_adapter": root / SECOND_ADAPTER_PATH}
