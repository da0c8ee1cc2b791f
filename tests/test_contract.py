"""The metadata contract: what the exporter writes, the stepper reads back exactly, or refuses loudly."""

from __future__ import annotations

import json

import pytest

from edgernn.runtime import contract
from edgernn.runtime.contract import InputSpec, OutputSpec
from edgernn.runtime.errors import ContractError


def make_info(cell: str = "gru", **overrides):
    fields = {
        "cell": cell,
        "num_layers": 2,
        "hidden_size": 16,
        "input": InputSpec(kind="tokens", size=3, dtype="int64", vocabulary=("a", "b", "c")),
        "output": OutputSpec(kind="logits", size=3),
        "edgernn_version": "0.1.0",
        **overrides,
    }
    return contract.make_info(**fields)


def metadata_doc(cell: str = "gru") -> dict:
    return json.loads(make_info(cell).to_json())


@pytest.mark.parametrize("cell", contract.CELLS)
def test_parse_info_round_trips(cell):
    info = make_info(cell, extra={"task": "chars"})
    parsed = contract.parse_info(info.to_json())
    assert parsed == info
    assert parsed.extra == {"task": "chars"}
    assert parsed.input.vocabulary == ("a", "b", "c")
    assert parsed.schema_version == contract.SCHEMA_VERSION
    expected_states = {"lstm": {"h": "h_next", "c": "c_next"}}.get(cell, {"h": "h_next"})
    assert parsed.state_map == expected_states
    assert all(s.shape == (2, 16) and s.initial == 0.0 for s in parsed.states)


def test_feature_metadata_keeps_normalisation():
    info = make_info(
        "lstm",
        input=InputSpec(kind="features", size=2, dtype="float32", mean=(1.0, -2.0), std=(0.5, 4.0)),
        output=OutputSpec(kind="values", size=1, mean=(100.0,), std=(20.0,)),
    )
    parsed = contract.parse_info(info.to_json())
    assert parsed.input.mean == (1.0, -2.0) and parsed.input.std == (0.5, 4.0)
    assert parsed.output.mean == (100.0,) and parsed.output.std == (20.0,)


@pytest.mark.parametrize("version", [0, 4, "1", None, True, 1.0, 2.0])
def test_unknown_schema_version_is_refused_naming_the_known_ones(version):
    doc = metadata_doc()
    doc["schema_version"] = version
    with pytest.raises(ContractError) as err:
        contract.parse_info(json.dumps(doc))
    message = str(err.value)
    assert f"schema_version {version!r} is not supported" in message
    assert "reads version(s) 1, 2, 3" in message


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '"gru"'])
def test_corrupt_json_is_refused(text):
    with pytest.raises(ContractError, match="edgernn metadata"):
        contract.parse_info(text)


def test_every_missing_or_mistyped_field_is_reported_in_one_error():
    doc = metadata_doc()
    del doc["cell"]
    del doc["output"]
    doc["hidden_size"] = "16"
    doc["num_layers"] = 0
    doc["input"]["kind"] = "pixels"
    doc["states"][0]["initial"] = "zero"
    with pytest.raises(ContractError) as err:
        contract.parse_info(json.dumps(doc))
    message = str(err.value)
    assert "metadata.cell: missing" in message
    assert "metadata.output: missing" in message
    assert "metadata.hidden_size: expected an integer, got '16'" in message
    assert "metadata.num_layers: expected a positive integer, got 0" in message
    assert "input.kind: expected one of tokens, features, got 'pixels'" in message
    assert "states[0].initial: expected an integer or a number, got 'zero'" in message
    assert message.startswith("invalid edgernn metadata:\n  - ")


def test_states_that_do_not_fit_the_cell_are_refused():
    doc = metadata_doc("gru")
    doc["cell"] = "lstm"  # an LSTM needs h and c; the document only has h
    with pytest.raises(ContractError, match=r"states: a lstm model with 2 layer\(s\) of 16 expects"):
        contract.parse_info(json.dumps(doc))


def test_state_shape_must_match_layers_and_hidden_size():
    doc = metadata_doc("gru")
    doc["states"][0]["shape"] = [16, 2]  # (hidden, layers): the wrong way round
    with pytest.raises(ContractError) as err:
        contract.parse_info(json.dumps(doc))
    assert "expects [('h', 'h_next', (2, 16))], got [('h', 'h_next', (16, 2))]" in str(err.value)


def test_vocabulary_must_match_the_input_size():
    doc = metadata_doc()
    doc["input"]["vocabulary"] = ["a", "b"]
    with pytest.raises(ContractError, match="input.vocabulary: expected 3 entries, got 2"):
        contract.parse_info(json.dumps(doc))


def test_make_info_holds_the_writer_to_the_reader_rules():
    with pytest.raises(ContractError, match="metadata.hidden_size: expected a positive integer, got 0"):
        make_info(hidden_size=0)


def test_schema_version_3_is_the_front_ends_and_only_its():
    """Version 3 marks a keyword model's front end (an older runtime refuses it by version); a file
    without a front end may not claim it, and a front end under version 2 is refused."""
    doc = metadata_doc()
    doc["schema_version"] = 3
    with pytest.raises(ContractError, match="schema_version 3: expected a front_end"):
        contract.parse_info(json.dumps(doc))
