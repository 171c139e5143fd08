"""Arrow batches as Spark 3.5's Arrow Java writes them are made what Ray's serializer accepts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ray_on_spark.data.arrow_format import complete_offsets


def _empty_without_offsets(t: pa.DataType) -> pa.Array:
    """A length-0 variable-width array with a 0-byte offsets buffer: what Arrow Java 12 writes."""
    return pa.Array.from_buffers(t, 0, [None, pa.py_buffer(b""), pa.py_buffer(b"")])


def _list_of_null(child: pa.Array) -> pa.Array:
    return pa.Array.from_buffers(pa.list_(child.type), 1, [pa.py_buffer(b"\x00"), pa.py_buffer(b"\0" * 8)],
                                 children=[child])


@pytest.mark.parametrize("child_type", [pa.string(), pa.binary()])
def test_an_empty_nested_array_without_offsets_gets_them_and_keeps_its_values(child_type):
    batch = pa.record_batch([pa.array([1], pa.int64()), _list_of_null(_empty_without_offsets(child_type))],
                            names=["k", "l"])
    assert batch.column(1).values.buffers()[1].size == 0
    fixed = complete_offsets(batch)
    assert fixed.column(1).values.buffers()[1].size >= 4
    assert fixed.equals(batch) and fixed.schema.equals(batch.schema)
    pa.Array.from_buffers(pa.int32(), 1, [None, fixed.column(1).values.buffers()[1]])  # Ray's rebuild, validated


def test_a_complete_batch_is_returned_as_it_is():
    batch = pa.record_batch([pa.array(["a", None]), pa.array([[1], None])], names=["s", "l"])
    assert complete_offsets(batch) is batch


def test_an_empty_batch_of_pyarrow_s_own_making_is_left_alone():
    batch = pa.record_batch([pa.array([], pa.string())], names=["s"])
    assert complete_offsets(batch).equals(batch)
