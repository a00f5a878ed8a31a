"""The chat's command rule (lab/sessions/chat.py command_refusal): mistyped commands are refused with
the list of commands, questions go to the model; the first /save is <prefix>_001."""

from __future__ import annotations

import io
import re
import string

import pytest
from helpers import make_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.records.record import AttentionRecord
from lab.sessions import chat as session
from lab.sessions.chat import COMMANDS, NAMES, command_refusal, typo_distance
from lab.stages import StageContext

LETTERS = string.ascii_lowercase


@pytest.mark.parametrize("a,b,d", [("exit", "exit", 0), ("exti", "exit", 1), ("sav", "save", 1), ("hepl", "help", 1),
                                   ("hello", "help", 2), ("", "save", 4), ("imgae", "image", 1), ("ca", "abc", 3)])
def test_typo_distance(a, b, d):
    assert typo_distance(a, b) == d == typo_distance(b, a)


@pytest.mark.parametrize("line,near", [("exti", "exit"), ("/sav", "/save"), ("hepl", "/help"), ("sav", "/save"),
                                       ("save", "/save"), ("quitt", "quit"), ("/hepl", "/help"), ("Rset", "/reset"),
                                       ("/Save", "/save"), ("imgae", "/image"), ("/ext", "/exit")])
def test_mistyped_commands_are_refused_with_the_list(line, near):
    why = command_refusal(line)
    assert why is not None and f"did you mean {near}?" in why
    assert all(c in why for c in ("/image PATH", "/save", "/heads", "/reset", "/help", "exit"))


@pytest.mark.parametrize("line", ["exit row left?", "exit row left", "save the cat", "hello", "describe", "why?",
                                  "help?", "save?", "what colour is it", "next", "/image x.png", "/save", "/heads 1:2",
                                  "/reset", "/help", "exit", "quit", "/exit", "/quit", "EXIT", "Quit"])
def test_questions_and_commands_pass(line):
    assert command_refusal(line) is None


def test_unknown_slash_word_without_hint():
    assert command_refusal("/bogus") == ("unknown command /bogus; commands: /image PATH, /save, /heads L:H,..., "
                                         "/reset, /help, exit")


words = st.text(alphabet=LETTERS + "?,'-", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(words, min_size=2, max_size=6))
def test_several_words_always_go_to_the_model(ws):
    """Any line of two or more words whose first word does not start with / is a question."""
    assert command_refusal(" ".join(ws)) is None


@st.composite
def one_typo(draw):
    name = draw(st.sampled_from(NAMES))
    kind = draw(st.sampled_from(["insert", "delete", "substitute", "swap"]))
    i = draw(st.integers(0, len(name) - 1))
    c = draw(st.sampled_from(LETTERS))
    if kind == "insert":
        w = name[:i] + c + name[i:]
    elif kind == "delete":
        w = name[:i] + name[i + 1:]
    elif kind == "substitute":
        w = name[:i] + c + name[i + 1:]
    else:
        j = min(i + 1, len(name) - 1)
        w = name[:i] + name[j] + name[i] + name[j + 1:] if j > i else name
    return w


@settings(max_examples=300, deadline=None)
@given(one_typo(), st.booleans())
def test_one_typo_of_a_command_is_refused(word, slash):
    """One insertion, deletion, substitution or neighbour swap of a command's name is refused (the
    exact exit / quit words end the chat), with or without the leading /."""
    line = ("/" + word) if slash else word
    if line.lower() in ("exit", "quit", "/exit", "/quit") or line in COMMANDS:
        assert command_refusal(line) is None
    else:
        assert command_refusal(line) is not None
        assert command_refusal(line + "?") is None or slash  # the escape: a one-word question ends with ?


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=LETTERS, min_size=1, max_size=10))
def test_one_word_far_from_every_command_is_a_question(word):
    far = min(typo_distance(word, n) for n in NAMES) > 1
    assert (command_refusal(word) is None) == (far or word in ("exit", "quit"))


def test_chat_refuses_typos_and_names_saves_from_001(tiny_vlm, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "im.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(img)
    asked = []
    cfg = make_cfg("cli_mode=true", "max_new_tokens=2", "stream=false", "token_figures=false",
                   "query_positions=last_input", f"image_file={img}", config_name="cli_config")
    ctx = StageContext(loader=lambda: tiny_vlm, output_dir=tmp_path / "out")
    orig = session.ChatSession.ask

    def ask(self, text, sample_id=None):
        asked.append(text)
        return orig(self, text, sample_id)

    lines = ["what is it ?", "and now ?", "exti", "/sav", "hepl", "exit row left?", "/save", "/save",
             "one more ?", "/save", "exit"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(session.ChatSession, "ask", ask)
        res = session.chat(cfg, ctx, stdin=io.StringIO("\n".join(lines) + "\n"))
    out, err = capsys.readouterr()
    assert asked == ["what is it ?", "and now ?", "exit row left?", "one more ?"]  # the typos never reached the model
    assert res == {"turns": 4}
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 3
    assert errors[0].startswith("error: 'exti' is not a command (did you mean exit?); commands: /image PATH, /save")
    assert errors[1].startswith("error: unknown command /sav (did you mean /save?)")
    assert "did you mean /help?" in errors[2]
    records = re.findall(r"^record: (\S+)$", out, flags=re.M)
    names = [p.rsplit("/", 1)[1] for p in records]
    # the first /save is chat_001 whatever the number of turns before it; a second /save of the same
    # answer rewrites it; the next answer is chat_002
    assert names == ["chat_001.safetensors", "chat_001.safetensors", "chat_002.safetensors"]
    assert AttentionRecord.load(records[0]).meta.query == "exit row left?"
    assert AttentionRecord.load(records[2]).meta.sample_id == "chat_002"
    # a second chat into the same folder does not overwrite the first one's records
    res = session.chat(cfg, ctx, stdin=io.StringIO("hi there ?\n/save\n/help\n"))
    out, _ = capsys.readouterr()
    assert re.findall(r"^record: \S+/(\S+)$", out, flags=re.M) == ["chat_003.safetensors"]
    assert session.HELP in out and session.TYPO_NOTE in out  # /help says the rule too


def test_chat_shows_the_run_heads_of_its_folder_and_says_so(tiny_vlm, tmp_path, capsys):
    """output_dir holding a finder's heads.json: the overlays use its heads, and the line says where
    they came from; /heads auto goes back to the answer's own top heads, said as such."""
    import json

    from PIL import Image

    img = tmp_path / "im.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(img)
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "heads.json").write_text(json.dumps({"heads": [{"layer": 1, "head": 0}, {"layer": 0, "head": 1}]}))
    cfg = make_cfg("cli_mode=true", "max_new_tokens=2", "stream=false", "token_figures=false",
                   "query_positions=last_input", f"image_file={img}", config_name="cli_config")
    session.chat(cfg, StageContext(loader=lambda: tiny_vlm, output_dir=out_dir),
                 stdin=io.StringIO("what is it ?\n/save\n/heads auto\n/save\n"))
    out, _ = capsys.readouterr()
    said = [l for l in out.splitlines() if l.startswith("heads: ")]
    assert said[0] == f"heads: L1H0, L0H1 (the run's selected heads, from {out_dir / 'heads.json'})"
    assert said[1] == "heads: auto (each answer's own top heads)"
    assert said[2].endswith("(this answer's own top heads, not a run's selection: give heads_file= for those)")
