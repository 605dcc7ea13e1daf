"""A tiny random causal LM for the mechanics of tuning and evaluation (resume, manifest, hashes, skipped
rows, refused configurations, the data-size curve), where the real 135M model adds only minutes.

Built offline in a second: a byte-level BPE tokenizer trained with ``tokenizers`` on a few strings (every
byte is in its alphabet, so any text encodes) and a 2-layer Llama of width 32 with seeded random weights,
saved as a model folder that :func:`selfinstruct_utils.tune.load_base` reads like any local model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOS = "<|endoftext|>"
_CORPUS = [
    "Given a sentence, decide whether it is grammatical. Output: yes",
    "Write a title for the story.\n\nInput: A dog learned to swim.\nOutput: Brave Paws",
    "Translate the number word into digits. Input: twelve Output: 12",
    "Task: Summarize the article in one line. Instruction: Classify the sentiment of the review.",
]


def tiny_model_dir(folder: str | Path, texts: Iterable[str] = (), *, seed: int = 0) -> Path:
    """Write a tiny Llama and its tokenizer into ``folder`` (created) and return it.

    Args:
        texts: extra strings the tokenizer's merges are learnt from (any text encodes without them).
        seed: the random weights' seed.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*_CORPUS, *texts], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=None)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}" + EOS
                               + "\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
