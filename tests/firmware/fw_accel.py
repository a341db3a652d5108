# The LIS3DH driver (hal/lis3dh.py) on the fake part of tests/firmware/fakes.py: its set-up
# registers, FIFO batches with timestamps one sample period apart, overruns, the INT1
# watermark as a wake source, and lib/fall.py's detections on the fall test traces read
# through the FIFO (the same detections as fed directly). Runs on MicroPython and CPython.
import fakes
import fall
from fw_fall import _run, _Trace
from fwsupport import raises
from hal.lis3dh import AccelError, Lis3dh


class _Clock:
    def __init__(self, t=100000):
        self.t = t

    def __call__(self):
        return self.t


def _part(**kw):
    m = fakes.Machine()
    irq = m.Pin(25, m.Pin.IN)
    dev = fakes.Lis3dh(m, 0x18, irq)
    clock = _Clock()
    acc = Lis3dh(m.I2C(0), ticks=clock, **kw)
    return m, dev, acc, clock, irq


def test_set_up_follows_the_datasheet():
    _, dev, acc, _, _ = _part(odr_hz=50, range_g=8, watermark=16)
    r = dev.regs
    assert r[0x20] == 0x47  # 50 Hz, X Y Z on, normal/high-resolution
    assert r[0x23] == 0xA8  # BDU, +-8 g, HR
    assert r[0x24] == 0x48  # FIFO on, INT1 latched
    assert r[0x2E] == 0x90  # stream mode, watermark 16
    assert r[0x22] == 0x44  # INT1: free-fall (IA1) and watermark
    assert r[0x30] == 0x95 and r[0x32] == 350 // 62 and r[0x33] == 3
    assert acc.period_ms == 20 and acc.mg == 4


def test_a_wrong_part_or_none_at_all_is_named():
    m = fakes.Machine()
    e = raises(AccelError, Lis3dh, m.I2C(0))
    assert "no answer at I2C address 0x18" in str(e)
    dev = fakes.Lis3dh(m, 0x18)
    dev.regs[0x0F] = 0x44
    assert "reads 0x44, not 0x33" in str(raises(AccelError, Lis3dh, m.I2C(0)))
    assert "unsupported" in str(raises(AccelError, Lis3dh, m.I2C(0), 0x18, 60))


def test_fifo_batches_are_stamped_one_period_apart_and_continue_each_other():
    _, dev, acc, clock, _ = _part()
    assert acc.read() == []
    for i in range(10):
        dev.push(0, 4 * i, 1000)
    got = acc.read()
    assert [s[0] for s in got] == [clock.t - 20 * (9 - i) for i in range(10)]
    assert [s[2] for s in got] == [4 * i for i in range(10)] and got[0][3] == 1000
    for _ in range(5):
        dev.push(-1500, 0, 0)
    clock.t += 103  # the loop came round a little late: the spacing is kept from the last batch
    more = acc.read()
    assert [s[0] for s in more] == [got[-1][0] + 20 * (i + 1) for i in range(5)]
    assert more[0][1] == -1500
    clock.t += 10000  # away for long: stamped from the read time again
    dev.push(0, 0, 1000)
    assert acc.read()[0][0] == clock.t


def test_an_overrun_is_counted_and_restamped_from_the_read():
    _, dev, acc, clock, _ = _part()
    for i in range(40):
        dev.push(4 * i, 0, 0)
    got = acc.read()
    assert len(got) == 32 and acc.overruns == 1
    assert got[0][1] == 32 and got[-1][1] == 156  # the oldest 8 were overwritten
    assert got[-1][0] == clock.t


def test_the_watermark_raises_int1_and_the_read_releases_it():
    m, dev, acc, _, irq = _part(watermark=4)
    seen = []
    irq.irq(handler=lambda p: seen.append(p.value()), trigger=m.Pin.IRQ_RISING, hard=True)
    for _ in range(4):
        dev.push(0, 0, 1000)
    assert irq.value() == 0
    dev.push(0, 0, 1000)
    assert irq.value() == 1 and seen == [1]
    assert len(acc.read()) == 5 and irq.value() == 0


def _via_fifo(trace, cancel_after_suspect_ms=None, batch=16):
    # the trace's samples pushed through the part at its rate, read in watermark batches
    _, dev, acc, clock, _ = _part(odr_hz=1000 // trace.dt, watermark=batch)
    clock.t = trace.out[0][0]
    d = fall.FallDetector()
    events = []
    suspect_t = None
    pending = 0
    for t, x, y, z in trace.out:
        dev.push(x, y, z)
        clock.t = t
        pending += 1
        if pending <= batch:
            continue
        pending = 0
        for st, sx, sy, sz in acc.read():
            r = d.feed(st, sx, sy, sz)
            if r is not None:
                events.append((r, st))
                if r == fall.SUSPECT:
                    suspect_t = st
            if (
                suspect_t is not None
                and cancel_after_suspect_ms is not None
                and st - suspect_t >= cancel_after_suspect_ms
            ):
                r = d.cancel()
                if r is not None:
                    events.append((r, st))
                suspect_t = None
    return [e[0] for e in events], events


def _same(trace, **kw):
    _, kinds, events = _run(trace, **kw)
    got_kinds, got = _via_fifo(trace, **kw)
    assert got_kinds == kinds, (got_kinds, kinds)
    assert [t for _, t in got] == [t for _, t in events]
    return kinds


def _traces():
    # the traces of fw_fall.py's tests (same seeds, same steps) and what each must give
    out = []
    tr = _Trace(seed=7)
    tr.walk(5000)
    tr.free_fall(350)
    tr.impact()
    tr.still(60000, axis=0)
    out.append((tr, {}, [fall.SUSPECT, fall.FALL]))
    tr = _Trace(seed=8, hz=25)
    tr.walk(4000)
    tr.free_fall(400)
    tr.impact(peak=4000)
    tr.still(50000, axis=1)
    out.append((tr, {}, [fall.SUSPECT, fall.FALL]))
    tr = _Trace(seed=9)
    tr.walk(3000)
    tr.free_fall(300)
    tr.impact()
    tr.still(3000)
    tr.walk(20000)
    out.append((tr, {}, [fall.DISMISSED]))
    tr = _Trace(seed=10)
    tr.walk(3000)
    tr.free_fall(350)
    tr.impact()
    tr.still(60000)
    out.append((tr, {"cancel_after_suspect_ms": 5000}, [fall.SUSPECT, fall.CANCELLED]))
    tr = _Trace(seed=11)
    tr.walk(3000)
    tr.sit_hard()
    tr.still(30000, axis=2)
    out.append((tr, {}, []))
    tr = _Trace(seed=13)
    tr.walk(2000)
    tr.free_fall(400)
    tr.still(30000)
    out.append((tr, {}, []))
    tr = _Trace(seed=14)
    tr.walk(2000)
    tr.free_fall(40)
    tr.impact()
    tr.still(30000)
    out.append((tr, {}, []))
    tr = _Trace(seed=15)
    tr.walk(120000)
    out.append((tr, {}, []))
    return out


def test_fall_traces_through_the_fifo_give_the_same_detections():
    for tr, kw, want in _traces():
        assert _same(tr, **kw) == want


# free fall as the wake source: the band reads the part only around falls


def test_free_fall_event_follows_the_detectors_figures_and_watch_routes_the_watermark():
    _, dev, acc, _, _ = _part(range_g=8)
    acc.free_fall(450, 80)  # lib/fall.py's defaults
    assert dev.regs[0x32] == 8 and dev.regs[0x33] == 3  # 8 x 62 mg >= 450 mg; 3 samples < 80 ms
    acc.watch(False)
    assert dev.regs[0x22] == 0x40  # free fall only
    acc.watch(True)
    assert dev.regs[0x22] == 0x44  # and the watermark
    _, dev, acc, _, _ = _part(range_g=2, odr_hz=25)
    acc.free_fall(450, 80)
    assert dev.regs[0x32] == 29 and dev.regs[0x33] == 1  # 29 x 16 mg; at 40 ms a sample: 2 low ones make 80 ms
    acc.free_fall(100000, 20)
    assert dev.regs[0x32] == 127 and dev.regs[0x33] == 0  # the register's limits


def test_unwatched_the_part_wakes_the_board_only_on_a_free_fall():
    m, dev, acc, clock, irq = _part(watermark=16)
    irq.irq(handler=acc.irq, trigger=m.Pin.IRQ_RISING, hard=True)
    acc.free_fall(450, 80)
    acc.watch(False)
    for i in range(200):  # worn, moving: no interrupt, the FIFO keeps its last 32 samples
        dev.push(300 * (i % 3), 200, 1000)
        clock.t += 20
    assert irq.value() == 0 and not acc.pending
    for _ in range(3):
        dev.push(50, -80, 120)
        clock.t += 20
    assert irq.value() == 0  # not yet longer than the duration (3 samples)
    dev.push(50, -80, 120)
    assert irq.value() == 1 and acc.pending
    got = acc.read()
    assert len(got) == 32 and [s[3] for s in got[-4:]] == [120] * 4  # the fall's start is there
    assert acc.overruns == 0  # an unwatched FIFO overwrites by design
    assert irq.value() == 0 and not acc.pending  # the read released the latched interrupt


def _gated(trace, cancel_after_suspect_ms=None, batch=16):
    # the band's schedule (apps/wristband/app.py _motion): a read only when INT1 asks for
    # one, then watch() while the detector needs samples; the loop polls the detector's
    # clock in between (it comes round every 20 ms in the cancel window, app.py step()), and
    # the wearer's press cancels whenever it comes
    m, dev, acc, clock, irq = _part(odr_hz=1000 // trace.dt, watermark=batch)
    irq.irq(handler=acc.irq, trigger=m.Pin.IRQ_RISING, hard=True)
    d = fall.FallDetector()
    acc.free_fall(d.ff_mg, d.ff_ms)
    acc.watch(False)
    events = []
    suspect_t = None
    for t, x, y, z in trace.out:
        dev.push(x, y, z)
        clock.t = t
        if acc.pending or irq.value():
            got = [(d.feed(st, sx, sy, sz), st) for st, sx, sy, sz in acc.read()]
        else:
            got = [(d.poll(t), t)]
        for r, st in got:
            if r is not None:
                events.append((r, st))
                if r == fall.SUSPECT:
                    suspect_t = st
        if suspect_t is not None and cancel_after_suspect_ms is not None and t - suspect_t >= cancel_after_suspect_ms:
            r = d.cancel()
            if r is not None:
                events.append((r, t))
            suspect_t = None
        acc.watch(d.needs_samples())
    return events, dev.reads


def test_reads_gated_by_the_free_fall_give_the_same_detections_and_none_while_walking():
    total = every_batch = 0
    for tr, kw, want in _traces():
        _, kinds, events = _run(tr, **kw)
        got, reads = _gated(tr, **kw)
        assert [e[0] for e in got] == kinds == want, ([e[0] for e in got], kinds)
        assert [t for _, t in got] == [t for _, t in events]
        if not want and tr.out[-1][0] - tr.out[0][0] > 100000:
            assert reads == 0, reads  # two minutes of walking: the band never read the part
        total += reads
        every_batch += len(tr.out) // 17  # a read per watermark (16 samples), as before
    assert total * 4 < every_batch, (total, every_batch)
