"""Cache hints on the row loads that several r loops of a looped reduction repeat."""

from __future__ import annotations

from tilefuse_triton.kernel_writer import hint_rereads

LOOPED_NORM = [
    "    acc1 = tl.full([XBLOCK, RBLOCK], 0, tl.float32)",
    "    for roffset in range(0, rnumel, RBLOCK):",
    "        tmp2 = tl.load(in_ptr0 + (rindex + 256*xindex), xmask & rmask, other=0)",
    "        acc1 = acc1 + tmp2 * tmp2",
    "    tmp6 = tl.sum(acc1, 1)[:, None]",
    "    for roffset in range(0, rnumel, RBLOCK):",
    "        tmp7 = tl.load(in_ptr0 + (rindex + 256*xindex), xmask & rmask, other=0)",
    "        tmp8 = tl.load(in_ptr1 + (rindex), eviction_policy='evict_last')",
    "        tmp9 = tl.load(in_ptr2 + (rindex))",
    "        tl.store(out_ptr0 + (rindex + 256*xindex), tmp7 * tmp6 * tmp8 * tmp9)",
]


def test_a_row_read_in_two_loops_is_kept_then_evicted_and_others_are_untouched():
    out = hint_rereads(LOOPED_NORM)
    assert out[2].endswith("other=0, eviction_policy='evict_last')")
    assert out[6].endswith("other=0, eviction_policy='evict_first')")
    changed = {i for i, (a, b) in enumerate(zip(LOOPED_NORM, out)) if a != b}
    assert changed == {2, 6}  # the hinted weight and the once-read in_ptr2 keep their text


def test_a_kernel_of_one_loop_has_nothing_to_hint():
    one_loop = LOOPED_NORM[:5]
    assert hint_rereads(one_loop) == one_loop
