"""Small checkpoints built in code, so nothing is downloaded (tests, benchmarks, the toy, the planted model).

llava15.py: word-level tokenizer, CLIP-style processor and a random LLaVA-1.5 (`save_tiny_llava`);
families.py: the other families' tiny checkpoints (LLaVA-NeXT, OneVision, Qwen2/2.5/3-VL, Gemma 3,
InternVL, Idefics3 / SmolVLM).
"""
