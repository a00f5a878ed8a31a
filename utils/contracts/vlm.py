"""What `lab/` calls on a loaded model, written down once (`llava.model.VLM` is the implementation).

`lab` never imports `llava` (import-linter), so the stages, the station and the chat take any object
with these members; a test checks that `llava.model.VLM` has every one of them
(tests/test_architecture.py). Tensors are torch tensors; `batch` is what `prepare` returned.
"""

from __future__ import annotations

from typing import Any, ContextManager, Protocol, Sequence, TextIO, runtime_checkable


@runtime_checkable
class VisionLanguageModel(Protocol):
    """A vision-language model driven by the station (lab/capture/station.py), the stages and the chat.

    Attributes:
        model_id: the checkpoint's name or folder, as records store it.
        model_type: the transformers `model_type` (selects the family plug-in).
        num_layers: decoder layers L; num_heads: attention heads per layer H.
        image_aspect: how images are fitted (e.g. "pad"), as records store it.
        prompt_template: "chat" | "plain" | "referseg".
        model: the underlying transformers module (its `dtype` goes into records).
        fingerprint: what identifies the weights and processor settings in records.
    """

    model_id: str
    model_type: str
    num_layers: int
    num_heads: int
    image_aspect: str
    prompt_template: str
    model: Any

    @property
    def fingerprint(self) -> dict: ...

    def prepare(self, samples: Sequence[Any], history: Sequence[tuple[str, str]] = ()) -> Any:
        """Tokenise a left-padded batch of (image, query[, id]) samples and locate their image tokens."""

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        """One forward pass over the prepared batch (no generation)."""

    def generate(self, batch: Any, max_new_tokens: int = 16, streamer: Any = None, **kwargs: Any) -> list[Any]:
        """Greedy generation; per sample the generated ids, cut after the first EOS."""

    def decode(self, ids: Any) -> str:
        """Generated ids -> text (special tokens skipped)."""

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """Ids -> the tokenizer's token strings."""

    def text_streamer(self, out: TextIO) -> Any:
        """A streamer printing the answer to `out` while it is generated (the chat)."""

    def vision_support(self) -> str | None:
        """None when `vision_capture` works for this model, else why not (one line)."""

    def vision_capture(self, aggregates: Sequence[str] = ("mean", "rollout", "vlm_visualizer")) -> ContextManager[Any]:
        """Context manager yielding an object with `result(b) -> ({aggregate: [V, P]}, metadata)`."""
