"""Session 10 (A): checks moved to where they belong."""

import dataclasses

import pytest

from odeflow.solvers.esdirk_tableaus import KVAERNO3


def test_esdirk_tableau_refuses_a_method_that_is_not_stiffly_accurate():
    # The ESDIRK stepper takes y_new as the last stage value; the tableau itself refuses
    # b != A's last row (here: the propagated and embedded weights swapped).
    with pytest.raises(ValueError, match="stiffly accurate"):
        dataclasses.replace(KVAERNO3, b=KVAERNO3.b_hat, b_hat=KVAERNO3.b)
