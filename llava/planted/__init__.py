"""A LLaVA whose weights are constructed, not trained: planted localization, visual and fixed heads
among 32 x 32 at LLaVA-1.5-7B's geometry (docs/planted.md). Build: python -m llava.planted --out DIR."""
