"""Memory helpers for the numba kernels: software prefetch, and row views.

``prefetch_l1(array, index)`` and ``prefetch_l2(array, index)`` ask the CPU to
bring the cache line of ``array[index]`` (a 1-d array) into the first-level or
only the second-level data cache, through LLVM's ``llvm.prefetch`` intrinsic
(``prefetcht0``/``prefetcht1`` on x86-64, ``prfm pldl1keep``/``pldl2keep`` on
ARM). A prefetch is a hint: it never faults, not even past the end of an
array, and changes no result, only when the data arrive.

Where they pay: the CTC recursions read a frame's row at the labels' positions,
an order the hardware prefetchers cannot follow; the cross-entropy rows are read
in order, but while a core is busy with the exponentials of one row the
hardware prefetchers run too little ahead of the next one to keep the memory
bus busy (benchmarks/README.md has the measurements).

``row_window(x, i)`` makes row ``i`` of a 2-d array whose rows lie apart
(``a[:, :C]`` of a wider ``a``) row ``i`` of a C-contiguous array, no copy: the
cross-entropy row kernels take such an input a row at a time.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch_l1", "prefetch_l2", "prefetch_row", "row_window", "LINE_BYTES"]

#: The cache line assumed by the loops that prefetch one address per line (64 bytes on
#: every x86-64 CPU and most ARM cores; a longer line only makes some hints redundant).
LINE_BYTES = 64


def _prefetch_intrinsic(locality: int, doc: str):
    """An intrinsic ``(array, index) -> None`` prefetching for reading with LLVM's
    ``locality`` (3: keep in every cache level; 2: from the second level out)."""

    def typer(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            address = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]],
                                               wraparound=False, boundscheck=False)
            byte_pointer = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            hint = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
                "llvm.prefetch.p0i8")
            # read (0), the locality, data cache (1)
            builder.call(hint, [builder.bitcast(address, byte_pointer), ir.Constant(i32, 0),
                                ir.Constant(i32, locality), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    typer.__doc__ = doc
    typer.__name__ = f"prefetch_locality_{locality}"
    return intrinsic(typer)


prefetch_l1 = _prefetch_intrinsic(
    3, "Bring the line of ``array[index]`` into every cache level, L1 included.")
prefetch_l2 = _prefetch_intrinsic(
    2, "Bring the line of ``array[index]`` into the second-level cache (not L1).")


@numba.njit(cache=True, inline="always")
def prefetch_row(row):
    """Prefetch every cache line of a 1-d ``row`` into L1: a row about to be gathered from
    in an order of its own (CTC asks for frame t + 1 while it computes frame t: 15% of the
    block-scaled forward at T=2000, N=8, C=1000, measured)."""
    step = max(1, LINE_BYTES // row.itemsize)
    for c in range(0, row.shape[0], step):
        prefetch_l1(row, c)


@intrinsic
def _window_start(typingctx, x, i):
    """``&x[i, 0] - i C`` (in elements; ``C = x.shape[1]``) for a 2-d array of any strides:
    where a C-contiguous array of rows of ``C`` whose row ``i`` is ``x[i]`` would start."""

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        row = cgutils.get_item_pointer(context, builder, array_type, view, [args[1], zero],
                                       wraparound=False, boundscheck=False)
        columns = cgutils.unpack_tuple(builder, view.shape, 2)[1]
        return builder.gep(row, [builder.neg(builder.mul(args[1], columns))])

    return types.CPointer(x.dtype)(x, types.intp), codegen


@numba.njit(inline="always")
def row_window(x, i):
    """Row ``i`` of a 2-d ``x`` ``(N, C)`` whose columns are adjacent (unit column stride) and
    whose rows may lie apart (``a[:, :C]`` of a wider ``a``), as row ``i`` of a C-contiguous
    ``(i + 1, C)`` array, without a copy.

    A kernel written for C-contiguous rows (whose loops LLVM vectorises for unit strides
    only) then takes the row at its own index ``i``, its per-row results at the same index
    of their arrays, no view of those taken. Only row ``i`` of the window is ``x``'s: the
    rows before it are other memory, never to be read or written (a prefetch past it is
    harmless: a hint). The window holds no reference to ``x`` (``numba.carray``), so it
    must not outlive ``x``."""
    return numba.carray(_window_start(x, i), (i + 1, x.shape[1]))
