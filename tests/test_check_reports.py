"""`rnnreg check` for CI: --json and --junit reports, --call adapters, statuses, and the pytest helper."""

from __future__ import annotations

import functools
import json
import textwrap
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from reference_models import correct as ref
from torch import Tensor, nn

from rnnreg.batch import Batch
from rnnreg.cli import main
from rnnreg.testing import adapters, checks
from rnnreg.testing.results import summary, to_json, to_junit
from rnnreg.testing.suite import CheckResult, pytest_checks, run_checks

USER_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class HFStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 8)
            self.drop = nn.Dropout(0.3)
            self.fc = nn.Linear(8, 2)

        def forward(self, input_ids, attention_mask):
            m = attention_mask.unsqueeze(-1).float()
            pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1)
            return self.fc(self.drop(pooled)), pooled

    def build():
        return HFStyle()

    def call(model, tokens, lengths):
        mask = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
        return model(input_ids=tokens, attention_mask=mask)[0]

    def clip_per_tensor(parameters, max_norm):
        params = list(parameters)
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], max_norm)
        return norm
    """
)


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "hf_models.py"
    path.write_text(USER_MODULE)
    return path


def test_check_with_call_writes_json_and_junit(
    user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    argv = [
        "check",
        f"{user_module}:build",
        "--call",
        f"{user_module}:call",
        "--clip",
        f"{user_module}:clip_per_tensor",
    ]
    code = main([*argv, "--json", str(report), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1  # the per-tensor clip fails; the model, reached through --call, passes its checks
    data = json.loads(report.read_text())
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status["gradient_clipping"] == "FAIL" and "tf.keras clipnorm" in data["checks"][len(status) - 9]["detail"]
    assert all(status[n] == "PASS" for n in ("eval_deterministic", "padding_invariance", "pad_content", "amp_parity"))
    assert data["ok"] is False and data["summary"]["FAIL"] == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == str(len(status))
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["gradient_clipping"]
    assert "1 failed" in out


def test_check_without_call_says_how_to_adapt(user_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", f"{user_module}:build"])
    out = capsys.readouterr().out
    assert code == 1 and "pass call= (rnnreg check --call" in out  # model(tokens, lengths) cannot run this model


def test_layer_factories_need_layer_p(user_module: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--locked-dropout", "rnnreg.layers:LockedDropout"])
    assert code == 2 and "--layer-p" in capsys.readouterr().err


def test_check_runs_layer_and_group_checks_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "check",
            "reference_models.correct:TransformerClassifier",
            "--groups",
            "reference_models.buggy:decay_everything",
            "--embedding-dropout",
            "reference_models.buggy:PositionEmbeddingDropout",
            "--layer-p",
            "0.3",
            "--num-classes",
            "3",
        ]
    )
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if line[:1].islower()}
    assert code == 1
    assert rows["decay_groups"] == "FAIL" and rows["embedding_dropout"] == "FAIL" and rows["locked_dropout"] == "SKIP"


def rows_of_every_status() -> list[CheckResult]:
    return [
        CheckResult("a", "PASS", "fine"),
        CheckResult("b", "FAIL", "b: broke.\n  Likely cause: x.\n  Fix: y."),
        CheckResult("c", "WARN", "reads pads"),
        CheckResult("d", "SKIP", "no loss_fn given"),
        CheckResult("e", "NOT RUN", "could not run: no kernel"),
    ]


def test_junit_maps_each_status_to_what_ci_displays() -> None:
    suite = to_junit(rows_of_every_status()).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "5",
        "1",
        "1",
        "1",
    )
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert [child.tag for child in cases["a"]] == []
    failure = cases["b"].find("failure")
    assert failure is not None and failure.get("message") == "b: broke." and "Fix: y." in (failure.text or "")
    assert cases["c"].findtext("system-out") == "WARN: reads pads"
    assert cases["d"].find("skipped") is not None
    error = cases["e"].find("error")
    assert error is not None and error.get("type") == "CheckCouldNotRun"


def test_json_summary_counts_every_status_and_ok_means_no_fail() -> None:
    rows = rows_of_every_status()
    assert summary(rows) == {"PASS": 1, "FAIL": 1, "WARN": 1, "SKIP": 1, "NOT RUN": 1}
    assert to_json(rows)["ok"] is False
    assert to_json([r for r in rows if r.status != "FAIL"])["ok"] is True
    assert summary([]) == {"PASS": 0, "FAIL": 0, "WARN": 0, "SKIP": 0, "NOT RUN": 0}


class UnpackedLSTM(nn.Module):
    """A plain unpacked LSTM: on CPUs without native bf16 its autocast forward raises inside torch."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(self.emb(tokens))
        return self.fc(out[torch.arange(len(tokens)), lengths - 1])


class RaisesUnderAutocast(UnpackedLSTM):
    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")
        return super().forward(tokens, lengths)


def test_a_forward_that_torch_cannot_run_under_autocast_is_not_run_not_fail() -> None:
    rows = {r.name: r for r in run_checks(RaisesUnderAutocast)}
    assert rows["amp_parity"].status == "NOT RUN"
    assert "could not run" in rows["amp_parity"].detail and "primitive descriptor" in rows["amp_parity"].detail


def test_adapters_build_the_call_conventions() -> None:
    tokens, lengths = torch.tensor([[3, 4, 0], [5, 0, 0]]), torch.tensor([2, 1])
    args, kwargs = adapters.input_ids_attention_mask(tokens, lengths)
    assert args == () and kwargs["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]
    (packed,), _ = adapters.packed_tokens(tokens, lengths)
    assert packed.data.tolist() == [3, 5, 4]  # time-major: step 0 of both rows, then step 1 of the longer row
    assert adapters.tokens_only(tokens, lengths)[0] == (tokens,)
    assert adapters.first((tokens, 1)) is tokens
    call = adapters.adapter(output=adapters.logits_attribute)
    result = call(lambda t, n: type("Out", (), {"logits": t * 2})(), tokens, lengths)
    assert torch.equal(result, tokens * 2)


@pytest.mark.parametrize(
    ("thunk", "match"),
    [
        (lambda: adapters.first(torch.zeros(2)), "non-empty tuple"),
        (lambda: adapters.logits_attribute((1, 2)), "logits attribute"),
        (lambda: adapters.adapter(inputs=3), "must be callables"),  # type: ignore[arg-type]
    ],
)
def test_adapter_misuse_is_a_type_error(thunk: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        thunk()  # type: ignore[operator]


def test_a_model_returning_a_tuple_passes_through_the_first_adapter() -> None:
    batch = Batch(torch.tensor([[3, 4, 0], [5, 6, 7]]), torch.tensor([2, 3]), torch.tensor([0, 1]))
    torch.manual_seed(0)
    model = ref.HFStyleClassifier()
    call = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
    checks.check_padding_invariance(model, batch, call=call)
    with pytest.raises(TypeError, match="call must be a function"):
        checks.check_padding_invariance(model, batch, call=3)  # type: ignore[arg-type]


# The documented three-line use, given every function so that each of its cases runs (none is skipped).
test_rnnreg_reference = pytest_checks(ref.TransformerClassifier, **ref.whole_suite_setup())


def test_pytest_helper_fails_skips_and_warns_per_check() -> None:
    helper = pytest_checks(ref.MaskFromPadIds, num_classes=ref.CLASSES, clip_fn=lambda params, m: 0.0)
    helper("eval_deterministic")  # PASS: returns
    with pytest.raises(pytest.fail.Exception, match="gradient clipping"):
        helper("gradient_clipping")
    with pytest.raises(pytest.skip.Exception, match="SKIP: no loss_fn"):
        helper("label_smoothing")
    with pytest.warns(UserWarning, match="pad content"):
        helper("pad_content")


def test_run_checks_only_runs_the_named_checks_and_rejects_unknown_names() -> None:
    rows = run_checks(ref.PackedGRU, only=["batch_independence", "label_smoothing"], num_classes=ref.CLASSES)
    assert [(r.name, r.status) for r in rows] == [("batch_independence", "PASS"), ("label_smoothing", "SKIP")]
    with pytest.raises(ValueError, match="unknown check names"):
        run_checks(ref.PackedGRU, only=["padding"])
    with pytest.raises(ValueError, match="layer_p"):
        run_checks(weight_drop=ref.FunctionalWeightDrop)


def test_report_files_are_utf8_indented_json_and_declared_xml(tmp_path: Path) -> None:
    from rnnreg.testing.results import write_json, write_junit

    rows = [*rows_of_every_status(), CheckResult("f", "FAIL", "")]
    write_json(rows, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_bytes() == (json.dumps(to_json(rows), indent=2) + "\n").encode("utf-8")
    write_junit(rows, tmp_path / "r.xml")
    text = (tmp_path / "r.xml").read_text("utf-8")
    assert text.startswith("<?xml version='1.0' encoding='utf-8'?>\n<testsuites")
    root = ET.fromstring(text.split("\n", 1)[1])
    assert (root.tag, root.get("name"), root.get("tests")) == ("testsuites", "rnnreg check", "6")
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "rnnreg check"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert {c.get("classname") for c in cases.values()} == {"rnnreg.check"}
    failure = cases["b"].find("failure")
    assert failure is not None and failure.get("type") == "InvariantViolation"
    error = cases["e"].find("error")
    assert (
        error is not None and error.get("message") == "could not run: no kernel" and error.text == error.get("message")
    )
    skipped = cases["d"].find("skipped")
    assert skipped is not None and skipped.get("message") == "no loss_fn given"
    empty = cases["f"].find("failure")
    assert empty is not None and empty.get("message") == "FAIL"  # no detail: the status stands in for the message


def test_a_failed_report_write_keeps_the_previous_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from rnnreg import fsio
    from rnnreg.testing.results import write_json, write_junit

    json_path, xml_path = tmp_path / "r.json", tmp_path / "r.xml"
    json_path.write_text("previous json")
    xml_path.write_text("previous xml")

    def write(fd: int, data: bytes) -> int:  # the disk is full: nothing reaches it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsio.os, "write", write)
    for writer, path in ((write_json, json_path), (write_junit, xml_path)):
        with pytest.raises(OSError) as info:
            writer(rows_of_every_status(), path)
        assert info.value.errno == errno.ENOSPC
    assert (json_path.read_text(), xml_path.read_text()) == ("previous json", "previous xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.xml"]


def test_a_report_path_that_is_a_folder_or_in_a_missing_one_is_refused_with_the_fix(tmp_path: Path) -> None:
    from rnnreg.testing.results import write_json, write_junit

    with pytest.raises(ValueError) as info:
        write_json(rows_of_every_status(), tmp_path)
    assert str(info.value) == (
        f"json path {str(tmp_path)!r} is a folder; name a file in it, e.g. {str(tmp_path / 'check.json')!r}"
    )
    with pytest.raises(ValueError, match=r"^junit path .*: the folder .* does not exist; create it or choose another"):
        write_junit(rows_of_every_status(), tmp_path / "missing" / "r.xml")
    assert list(tmp_path.iterdir()) == []


def test_adapter_names_say_what_they_adapt() -> None:
    call = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
    assert call.__name__ == "adapter(input_ids_attention_mask, first)"
    unnamed = adapters.adapter(inputs=functools.partial(adapters.tokens_only), output=functools.partial(adapters.first))
    assert unnamed.__name__ == "adapter(inputs, output)"


class ModelOutput(OrderedDict):
    """Hugging Face's ModelOutput in miniature: a mapping whose integer index skips values that are None."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return tuple(v for v in self.values() if v is not None)[key]


def test_first_takes_the_first_value_of_a_model_output_as_its_index_0_does() -> None:
    logits, hidden = torch.tensor([[0.5, -1.0]]), torch.ones(1, 3)
    assert adapters.first(ModelOutput(logits=logits, hidden_states=hidden)) is logits
    assert adapters.first(ModelOutput(loss=None, logits=logits)) is logits  # no labels given: loss is None
    assert adapters.first({"logits": logits}) is logits
    assert adapters.first([logits, hidden]) is logits
    for empty in (ModelOutput(), ModelOutput(loss=None), ()):
        with pytest.raises(TypeError, match=r"non-empty tuple or list .* or a mapping"):
            adapters.first(empty)


class ModelOutputClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> ModelOutput:
        m = attention_mask.unsqueeze(-1).float()  # [B, T, 1]
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1)  # [B, D]
        return ModelOutput(loss=None, logits=self.fc(pooled), hidden_states=pooled)


def test_a_model_returning_a_model_output_passes_through_the_first_adapter() -> None:
    batch = Batch(torch.tensor([[3, 4, 0], [5, 6, 7]]), torch.tensor([2, 3]), torch.tensor([0, 1]))
    torch.manual_seed(0)
    call = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
    info = checks.check_padding_invariance(ModelOutputClassifier(), batch, call=call)
    assert "logits unchanged" in info.detail


class RecordsItsBatch(nn.Module):
    """Logits [length, first token] per row; remembers the lengths and tokens it was called with."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        self.seen = (tokens.clone(), lengths.clone())
        return torch.stack([lengths.float(), tokens[:, 0].float()], dim=1)  # [B, 2]


def test_sorted_by_length_sorts_rows_for_the_model_and_returns_them_in_the_callers_order() -> None:
    model = RecordsItsBatch()
    tokens = torch.tensor([[7, 0, 0], [8, 9, 0], [4, 5, 6], [3, 2, 0]])
    lengths = torch.tensor([1, 2, 3, 2])
    logits = adapters.sorted_by_length()(model, tokens, lengths)
    assert model.seen[1].tolist() == [3, 2, 2, 1]
    assert model.seen[0][:, 0].tolist() == [4, 8, 3, 7]  # stable: of the two rows of length 2, row 1 stays first
    assert logits.tolist() == [[1.0, 7.0], [2.0, 8.0], [3.0, 4.0], [2.0, 3.0]]


class ReturnsLogitsAndState(RecordsItsBatch):
    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, str]:  # type: ignore[override]
        return super().forward(tokens, lengths), "state"


def test_sorted_by_length_wraps_another_call_and_needs_logits_back() -> None:
    model = ReturnsLogitsAndState()
    tokens, lengths = torch.tensor([[1, 0], [2, 3]]), torch.tensor([1, 2])
    logits = adapters.sorted_by_length(adapters.adapter(output=adapters.first))(model, tokens, lengths)
    assert logits.tolist() == [[1.0, 1.0], [2.0, 2.0]] and model.seen[1].tolist() == [2, 1]
    with pytest.raises(TypeError, match=r"got tuple\); adapt the output inside it"):
        adapters.sorted_by_length()(model, tokens, lengths)
    with pytest.raises(TypeError, match="call must be a function"):
        adapters.sorted_by_length(3)  # type: ignore[arg-type]
    assert adapters.sorted_by_length().__name__ == "sorted_by_length()"
    named = adapters.sorted_by_length(adapters.adapter(output=adapters.first)).__name__
    assert named == "sorted_by_length(adapter(tokens_and_lengths, first))"


def test_the_attention_mask_is_built_on_the_tokens_device() -> None:
    tokens = torch.ones(3, 4, dtype=torch.long, device="meta")  # meta stands in for CUDA; lengths stay on the CPU
    _, kwargs = adapters.input_ids_attention_mask(tokens, torch.tensor([2, 4, 1]))
    assert kwargs["attention_mask"].device == torch.device("meta")


def test_sorted_by_length_refuses_a_scalar_output_and_names_a_call_without_a_name() -> None:
    call = adapters.sorted_by_length(functools.partial(lambda model, tokens, lengths: torch.tensor(1.0)))
    assert call.__name__ == "sorted_by_length(call)"
    with pytest.raises(
        TypeError, match=r"needs logits\[B, C\] with B=2 to put back in order \(got a tensor of shape \(\)\)"
    ):
        call(None, torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 1]))
