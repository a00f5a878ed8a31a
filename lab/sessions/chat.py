"""cli_llava.py's session: ask a model about an image, keep the conversation, save what its heads looked at.

One query (`run_cli`): the answer is streamed, the attention record is saved to
`<output_dir>/attention/<id>.safetensors` and an overlay of the heads (from `heads_file=`, else
from the heads.json of a finder run in `output_dir`, else the record's own top heads by spatial
entropy; the line after the answer says which) to `<output_dir>/figures/<id>_heads.png`; records
also carry the vision tower's token->patch matrices when the model supports them (`vision=`), for
`visualize_attention.py mode=tokens`.
Chat (`chat`, `cli_mode=true`) reads stdin lines: plain text is a user turn (history kept), and
the commands in `HELP`. The model is any object with the VLM methods (`prepare`, `generate`,
`text_streamer`, ...), handed in through the `StageContext`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from lab.figures import token_figures
from lab.records.record import record_path
from lab.analysis.record_numbers import analyze_record
from lab.report.page_settings import run_settings
from lab.runs.heads_files import heads_from_file
from lab.stages.context import StageContext
from lab.stages.visualize import visualize_record
from lab.capture.station import Strategy, collect
from utils.cli import resolve_query
from utils.console import command_line, printable
from utils.errors import UserError
from utils.settings.reading import settings_from_config
from utils.images import load_image
from utils.contracts.vlm import VisionLanguageModel
from utils.settings.declarations import ChatConfig

log = logging.getLogger("cli_llava")

HELP = """commands:
  <text>            ask about the current image (the conversation is kept)
  /image PATH       switch to another image (clears the conversation)
  /save             save the last answer's attention record and overlay, print their paths
  /heads L:H,L:H    heads to show in overlays (/heads auto: the record's own top heads; /heads: show)
  /reset            clear the conversation, keep the image
  /help             this text
  exit              quit (also /exit, quit, end of input)"""
# /help prints it under HELP (whose lines after the first are the commands, as --help lists them)
TYPO_NOTE = """a one-word line one typo away from a command (exti, sav, hepl) and an unknown /word are refused;
end a one-word question with ? to send it (several words always go to the model)"""

# what `handle` runs; NAMES: the bare words a mistyped one-word line is compared with
COMMANDS = ("/image", "/save", "/heads", "/reset", "/help", "/exit", "/quit")
EXIT_WORDS = ("exit", "quit", "/exit", "/quit")
NAMES = ("image", "save", "heads", "reset", "help", "exit", "quit")


def typo_distance(a: str, b: str) -> int:
    """Optimal-string-alignment edit distance: insertions, deletions, substitutions and swaps of two
    neighbouring characters, each counting 1 (`exti` -> `exit`: 1, `sav` -> `save`: 1)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def command_refusal(line: str) -> str | None:
    """Why `line` is neither a command nor a question, or None.

    The rule: a line whose first word starts with `/` is a command and must be one of COMMANDS;
    a line of one word (no whitespace) that does not end with `?` and is within one typo
    (`typo_distance` <= 1, case ignored) of a command's name (NAMES: exit, save, help, ...) is
    refused (`exit`, `quit`, `/exit`, `/quit` in any case end the chat). Every other line (several
    words, or one word far from every command, or one ending with `?`) is a question for the model."""
    line = line.strip()
    first = line.split(maxsplit=1)[0] if line else ""
    if line.lower() in EXIT_WORDS:
        return None
    if first.startswith("/"):
        if first in COMMANDS:
            return None
        return _refusal(first, first[1:], slash=True)
    if first != line or line.endswith("?"):
        return None
    if min(typo_distance(line.lower(), n) for n in NAMES) <= 1:
        return _refusal(line, line)
    return None


def _refusal(word: str, bare: str, slash: bool = False) -> str:
    near = min(NAMES, key=lambda n: (typo_distance(bare.lower(), n), n))
    hint = ""
    if typo_distance(bare.lower(), near) <= 2:
        hint = f" (did you mean {near if near in ('exit', 'quit') and not slash else '/' + near}?)"
    what = f"unknown command {word}" if slash else f"{word!r} is not a command"
    return (f"{what}{hint}; commands: /image PATH, /save, /heads L:H,..., /reset, /help, exit"
            + ("" if slash else " (a one-word question: end it with ?)"))


class _TurnVLM:
    """The VLM as `lab.stations.collect` sees it for one chat turn: prepare() with the conversation
    so far, generate() streaming its tokens. Everything else is the wrapped VLM."""

    def __init__(self, vlm: VisionLanguageModel, history: list[tuple[str, str]], streamer: Any):
        self._vlm, self._history, self._streamer = vlm, history, streamer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vlm, name)

    def prepare(self, samples, history=None):
        return self._vlm.prepare(samples, history=self._history if history is None else history)

    def generate(self, batch, max_new_tokens: int = 16, **kwargs):
        return self._vlm.generate(batch, max_new_tokens=max_new_tokens, streamer=self._streamer, **kwargs)


def parse_heads(spec: str, num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """'2:1,3:0' -> [(2, 1), (3, 0)], checked against the model's size."""
    heads = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer_s, head_s = part.split(":")
            layer, head = int(layer_s), int(head_s)
        except ValueError:
            raise UserError(f"/heads: {part!r} is not LAYER:HEAD (e.g. /heads 14:3,20:7)") from None
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise UserError(f"/heads: L{layer}H{head} is outside the model's {num_layers} layers x {num_heads} heads")
        if (layer, head) in heads:
            log.info("/heads: L%dH%d named twice, kept once", layer, head)
            continue
        heads.append((layer, head))
    if not heads:
        raise UserError("/heads needs LAYER:HEAD pairs, e.g. /heads 14:3,20:7")
    return heads


class ChatSession:
    """One image, a conversation about it, and the attention record of the last answer."""

    def __init__(self, vlm: VisionLanguageModel, cfg: Any, out_dir: Path, heads: list[tuple[int, int]] | None = None,
                 heads_source: str | None = None, out: TextIO | None = None):
        self.vlm, self.cfg, self.out_dir = vlm, cfg, Path(out_dir)
        self.heads = heads
        self.heads_source = heads_source if heads else None  # the heads file they came from (None: /heads or own)
        self.out = out or sys.stdout
        self.image: Any = None
        self.image_path: str | None = None
        self.history: list[tuple[str, str]] = []
        self.last: Any = None  # AttentionRecord of the last answer
        self.saved = 0  # the number NNN of the last record /save wrote as <save_id or chat>_NNN
        self.last_num: int | None = None  # NNN of the last answer's id (None: an id given by the caller)
        self.saved_rec: Any = None  # the record /save wrote last (a second /save rewrites the same files)
        self.vision = _vision_setting(vlm, cfg)  # store the vision tower's token->patch matrices in records

    def say(self, text: str) -> None:
        print(printable(text, keep="\n"), file=self.out, flush=True)

    # ---- state ----------------------------------------------------------------------------
    def set_image(self, path: str) -> None:
        self.image = load_image(path)  # UserError on a missing / unreadable file: the old image stays
        self.image_path = str(Path(path).expanduser())
        self.history = []
        self.last = None

    def reset(self) -> None:
        self.history = []

    # ---- one turn ---------------------------------------------------------------------------
    def ask(self, text: str, sample_id: str | None = None) -> Any:
        """Answer `text` about the current image (streamed), keep the turn, return its record."""
        if self.image is None:
            raise UserError("no image yet: give image_file= or type /image PATH first")
        streamer = self.vlm.text_streamer(self.out) if self.cfg.stream else None
        self.last_num, sid = (None, sample_id) if sample_id else self._next_id()
        strategy = Strategy(query_positions=self.cfg.query_positions, vision=self.vision)
        (rec,) = collect(_TurnVLM(self.vlm, list(self.history), streamer),
                         [(self.image.copy(), text, sid, self.image_path)], strategy,
                         max_new_tokens=int(self.cfg.max_new_tokens))
        answer = rec.meta.generated_text
        if streamer is None or not streamer.started:
            self.say(f"assistant: {answer or '(empty answer)'}")
        self.history.append((text, answer))
        self.last = rec
        return rec

    # ---- files --------------------------------------------------------------------------------
    def _next_id(self) -> tuple[int, str]:
        """The id the next /save writes: <save_id or chat>_NNN, NNN one above the last saved (from 001),
        skipping names whose record already exists in the output folder (an earlier chat there)."""
        n = self.saved + 1
        prefix = self.cfg.save_id or "chat"
        while record_path(self.out_dir, f"{prefix}_{n:03d}").exists():
            n += 1
        return n, f"{prefix}_{n:03d}"

    def save(self) -> dict[str, str]:
        """Record + overlay (+ per-token figures) of the last answer; returns their paths."""
        rec = self.last
        if rec is None:
            raise UserError("nothing to save yet: ask a question first")
        if rec is not self.saved_rec and self.last_num is not None:
            self.saved, self.saved_rec = self.last_num, rec
        target = record_path(self.out_dir, rec.meta.sample_id)
        if target.exists():
            self.say(f"replacing the record {target} (an earlier answer saved under the same id; "
                     f"save_id=<name> keeps both)")
        paths = {"record": str(rec.save(target))}
        figs = self.out_dir / "figures"
        vis = _overlay(rec, self.cfg, figs, self.heads)
        paths["overlay"] = vis["figure"]
        if self.cfg.token_figures and rec.meta.query_mode == "generated" and rec.image_attention.shape[0]:
            sid = Path(paths["record"]).name.removesuffix(".safetensors")
            pairs = [tuple(h) for h in vis["heads"]]
            names = ", ".join(f"L{l}H{h}" for l, h in pairs)
            paths["tokens"] = str(token_figures.token_strip(rec, self.image, figs / f"{sid}_tokens.png", pairs=pairs,
                                                 title=f"{rec.meta.generated_text}   (per token; heads {names})"))
            paths["image_share"] = str(token_figures.token_curve(rec, figs / f"{sid}_image_share.png"))
        heads_txt = ", ".join(f"L{l}H{h}" for l, h in vis["heads"])
        if self.heads and self.heads_source:
            whose = f"the run's selected heads, from {self.heads_source}"
        elif self.heads:
            whose = "chosen with /heads"
        else:
            whose = "this answer's own top heads, not a run's selection: give heads_file= for those"
        self.say(f"heads: {heads_txt} ({whose})")
        for k, v in paths.items():
            self.say(f"{k}: {v}")
        if rec.meta.query_mode == "generated" and rec.image_attention.shape[0]:
            extra = " vision.aggregate=vlm_visualizer" if rec.vision else ""
            cmd = command_line("visualize_attention.py", "mode=tokens", attention_file=paths["record"])
            self.say(f"per-token view: {cmd}{extra}")
        return paths

    # ---- chat commands --------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Run one input line; False when the chat should end."""
        if line.lower() in EXIT_WORDS or line.partition(" ")[0] in ("/exit", "/quit"):
            return False
        why = command_refusal(line)
        if why is not None:
            raise UserError(why)
        if not line.startswith("/"):
            self.ask(line)
            return True
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        if cmd == "/image":
            if not arg:
                raise UserError("/image needs a path: /image PATH")
            self.set_image(arg)
            self.say(f"image: {self.image_path} ({self.image.size[0]}x{self.image.size[1]}); conversation cleared")
        elif cmd == "/save":
            if arg:
                raise UserError(f"/save takes no argument (got {printable(arg)!r}): files go to {self.out_dir}; "
                                "name them with save_id= on the command line")
            self.save()
        elif cmd == "/heads":
            if not arg:
                self.say("heads: " + (", ".join(f"L{l}H{h}" for l, h in self.heads) if self.heads else "auto"))
            elif arg == "auto":
                self.heads, self.heads_source = None, None
                self.say("heads: auto (each answer's own top heads)")
            else:
                self.heads, self.heads_source = parse_heads(arg, self.vlm.num_layers, self.vlm.num_heads), None
                self.say("heads: " + ", ".join(f"L{l}H{h}" for l, h in self.heads))
        elif cmd == "/reset":
            self.reset()
            self.say("conversation cleared")
        elif cmd == "/help":
            self.say(f"{HELP}\n{TYPO_NOTE}")
        else:  # pragma: no cover - command_refusal refused it above
            raise UserError(f"unknown command {cmd}; type /help for the commands")
        return True


def _overlay(rec: Any, cfg: Any, out_dir: Path, heads: list[tuple[int, int]] | None) -> dict:
    """The overlay of `heads`, else of the record's top heads (above its elbow; failing that, the
    lowest-entropy heads outside the excluded layers)."""
    try:
        return visualize_record(rec, cfg, out_dir, heads)
    except UserError:
        if heads is not None:
            raise
        res = analyze_record(rec, cfg.selection, cfg.grounding)  # criterion 2 only
        fallback = rec.model_heads(res.ranked_heads(cfg.top_k))
        if not fallback:
            raise
        log.info("no head passes both criteria in this answer; showing the lowest-entropy heads")
        return visualize_record(rec, cfg, out_dir, fallback)


def _vision_setting(vlm: VisionLanguageModel, cfg: Any) -> bool:
    """vision=true: required (a model that cannot is an error); null: when the model supports it; false: off."""
    want = cfg.vision
    if want is False:
        return False
    support = getattr(vlm, "vision_support", None)
    why = support() if support is not None else f"{type(vlm).__name__} has no vision_capture()"
    if why:
        if want:
            raise UserError(f"vision=true: {why}")
        log.info("records will not carry vision-tower matrices: %s", why)
        return False
    return True


def _heads_option(cfg: ChatConfig, out_dir: Path, vlm=None) -> tuple[list[tuple[int, int]] | None, str | None]:
    """The heads the overlays show and where they come from: `heads_file=`, else the heads.json of a
    finder run in `output_dir`, else (None, None): each answer's own top heads. The first top_k of
    the file, top_k as the file's run set it (run_config.json beside it) unless top_k= is given."""
    path = Path(cfg.heads_file) if cfg.heads_file else Path(out_dir) / "heads.json"
    if not cfg.heads_file and not path.is_file():
        return None, None
    top_k = run_settings(path.parent, cfg.selection, cfg.grounding, int(cfg.top_k)).top_k
    heads = heads_from_file(str(path), top_k)
    if vlm is not None:
        bad = [h for h in heads if not (0 <= h[0] < vlm.num_layers and 0 <= h[1] < vlm.num_heads)]
        if bad:
            raise UserError(f"heads_file={path}: heads {bad} are outside the model's "
                            f"{vlm.num_layers} layers x {vlm.num_heads} heads")
    return heads, str(path)


def run_cli(cfg: ChatConfig, ctx: StageContext) -> dict:
    """Dispatch: one query, or the chat loop (`utils.settings.declarations.ChatConfig`, or a composed config from Python)."""
    cfg = settings_from_config(cfg)
    if cfg.cli_mode:
        return chat(cfg, ctx)
    query = resolve_query(cfg)
    if not query or not cfg.image_file:
        raise UserError("give query=... and image_file=... for one question (query_file=<UTF-8 text file> instead "
                        "of query= for text with quotes or commas), or cli_mode=true for a chat")
    load_image(cfg.image_file)  # a bad path fails before the model loads
    _heads_option(cfg, ctx.output_dir)
    vlm = ctx.load_vlm()
    session = ChatSession(vlm, cfg, ctx.output_dir, *_heads_option(cfg, ctx.output_dir, vlm))
    session.set_image(cfg.image_file)
    session.ask(query, sample_id=cfg.save_id or Path(cfg.image_file).stem)
    paths = session.save()
    return {"answer": session.last.meta.generated_text, **paths}


def chat(cfg: ChatConfig, ctx: StageContext, stdin: TextIO | None = None) -> dict:
    """The interactive loop; a user error prints one line (stderr) and the chat goes on."""
    cfg = settings_from_config(cfg)
    stdin = stdin or sys.stdin
    if cfg.image_file:
        load_image(cfg.image_file)
    vlm = ctx.load_vlm()
    session = ChatSession(vlm, cfg, ctx.output_dir, *_heads_option(cfg, ctx.output_dir, vlm))
    if cfg.image_file:
        session.set_image(cfg.image_file)
    interactive = stdin.isatty()
    session.say(f"chat with {vlm.model_id} ({vlm.num_layers} layers x {vlm.num_heads} heads); "
                f"image: {session.image_path or 'none (use /image PATH)'}; /help for commands, exit to quit")
    turns = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = stdin.readline()
        if not line:  # end of input
            break
        line = line.strip()
        if not line:
            continue
        try:
            if not session.handle(line):
                break
            turns += not line.startswith("/")
        except UserError as e:
            print(f"error: {printable(str(e).splitlines()[0])}", file=sys.stderr, flush=True)
    session.say("bye")
    return {"turns": turns}
