"""Signals become exceptions that unwind staging (ltexport.interrupts)."""

import os
import signal
import sys

import pytest

from ltexport import interrupts


def test_deferred_signals_are_raised_after_the_block_and_ignored_ones_stay_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with interrupts.handled():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # nohup stays nohup
            done = []
            with pytest.raises(interrupts.Interrupted) as raised:
                with interrupts.deferred():
                    os.kill(os.getpid(), signal.SIGTERM)
                    done.append("the block ran to its end")
            assert done and raised.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_landing_in_a_finalizer_is_raised_at_the_next_checkpoint():
    class Resource:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs here, inside __del__, where a raise would be dropped

    dropped = []
    with interrupts.handled(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "unraisablehook", dropped.append)
        Resource()
        assert interrupts.arrived() and not dropped  # recorded, not raised where Python would drop it
        with pytest.raises(interrupts.Interrupted):
            interrupts.check()
    assert not interrupts.arrived()
