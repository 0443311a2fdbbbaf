"""Numba intrinsics: relaxed atomic loads/stores on int64 arrays, and cache prefetch.

The workers' progress counters live in shared memory and are read by other
processes while they change.  A plain load inside a compiled loop may be kept in
a register by the compiler; a relaxed ("monotonic") atomic load or store cannot,
and on x86-64 it costs the same as an ordinary ``mov``.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _pointer(context, builder, aryty, ary_value, idx):
    ary = context.make_array(aryty)(context, builder, ary_value)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)


@intrinsic
def load_relaxed(typingctx, arr, idx):
    """``arr[idx]`` for a 1-d int64 array, read from memory every time."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "monotonic", 8)
    return types.int64(arr, idx), codegen


@intrinsic
def store_relaxed(typingctx, arr, idx, value):
    """``arr[idx] = value`` for a 1-d int64 array, written to memory every time."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, "monotonic", 8)
        return context.get_dummy_value()
    return types.void(arr, idx, value), codegen


@intrinsic
def prefetch(typingctx, arr, idx, write):
    """Ask the CPU to bring the cache line of ``arr[idx]`` close (``write=True``: with ownership).

    A hint only (``llvm.prefetch``): never faults, changes no value.
    """
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, rw), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, idx, write), codegen


@intrinsic
def yield_cpu(typingctx):
    """Give the CPU to another runnable thread (POSIX ``sched_yield``), for waits that may outlast
    a time slice: a thread spinning for a descheduled partner would otherwise hold the core the
    partner needs.  The call is by symbol name, so a cached kernel stays valid across processes."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()
    return types.void(), codegen
