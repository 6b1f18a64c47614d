"""The Llama 3 system: presets, tokenizer, pretraining, post-training, scaling, guard."""
