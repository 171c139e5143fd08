"""Arrow data as Spark wrote it, made what Ray's serializer accepts (pyarrow only: runs in the block owners too)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

logger = logging.getLogger(__name__)


def _offsets_missing(array: "pyarrow.Array") -> bool:
    """Whether ``array`` or an array nested in it has length 0 and no offsets buffer content."""
    import pyarrow as pa

    t = array.type
    if pa.types.is_struct(t):
        return any(_offsets_missing(array.field(i)) for i in range(t.num_fields))
    var_width = (pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t)
                 or pa.types.is_large_binary(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
                 or pa.types.is_map(t))
    if not var_width:
        return False
    offsets = array.buffers()[1]
    if len(array) == 0 and (offsets is None or offsets.size == 0):
        return True
    if pa.types.is_map(t):
        return _offsets_missing(array.keys) or _offsets_missing(array.items)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _offsets_missing(array.values)
    return False


def complete_offsets(batch: "pyarrow.RecordBatch") -> "pyarrow.RecordBatch":
    """``batch`` with an offsets buffer in every empty variable-width array, as Arrow's format asks.

    Spark 3.5's Arrow (Java 12) writes an empty string, binary, list or map vector -- the
    child of a batch's all-null map column, say -- with no offsets at all; Arrow C++ reads
    that, but Ray's serializer of Arrow tables rebuilds each offsets array with validation
    and fails (``Buffer #1 too small``).  Only the columns that need it are copied
    (``concat_arrays`` writes the offsets); Spark 4's Arrow writes them itself.
    """
    import pyarrow as pa

    columns = batch.columns
    broken = [i for i, c in enumerate(columns) if _offsets_missing(c)]
    if not broken:
        return batch
    logger.debug("completing the offsets of empty arrays in columns %s", [batch.schema.names[i] for i in broken])
    for i in broken:
        columns[i] = pa.concat_arrays([columns[i]])
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
