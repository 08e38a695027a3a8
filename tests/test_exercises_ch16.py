"""Graders for chapter 16 (preference tuning with DPO): the DPO loss.

    python -m pytest tests/test_exercises_ch16.py --impl=exercises
"""

import math

import pytest
import torch

from minillama.dpo import dpo_loss


def logps(b: int, seed: int, scale: float = 20.0) -> list[torch.Tensor]:
    """Four (b,) tensors of negative 'summed log-probabilities', as a real batch has."""
    g = torch.Generator().manual_seed(seed)
    return [-scale * torch.rand(b, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("b, beta, seed", [(1, 0.1, 0), (8, 0.1, 1), (5, 0.5, 2), (16, 2.0, 3)])
def test_ch16_dpo_loss_matches_the_library(impl, b, beta, seed):
    pi_w, pi_l, ref_w, ref_l = logps(b, seed)
    got = impl("ch16_dpo").dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
    want, _ = dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
    assert got.shape == ()
    torch.testing.assert_close(got, want)


def test_ch16_dpo_loss_on_hand_computed_numbers(impl):
    # margin m = (pi_w - ref_w) - (pi_l - ref_l) = (-3 + 5) - (-9 + 7) = 4; beta m = 0.4
    args = [torch.tensor([-3.0]), torch.tensor([-9.0]), torch.tensor([-5.0]), torch.tensor([-7.0])]
    got = impl("ch16_dpo").dpo_loss(*args, beta=0.1)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-0.4)), rel=1e-6)
    # at the reference (pi = ref) every pair costs log 2
    same = torch.tensor([-4.0, -11.0])
    assert impl("ch16_dpo").dpo_loss(same, same - 3, same, same - 3, beta=0.1).item() == \
        pytest.approx(math.log(2), rel=1e-6)


def test_ch16_dpo_loss_gradient_is_beta_sigma_of_minus_the_margin(impl):
    pi_w, pi_l, ref_w, ref_l = logps(6, seed=4)
    pi_w.requires_grad_(True)
    pi_l.requires_grad_(True)
    beta = 0.3
    impl("ch16_dpo").dpo_loss(pi_w, pi_l, ref_w, ref_l, beta).backward()
    margin = beta * ((pi_w - ref_w) - (pi_l - ref_l)).detach()
    weight = beta * torch.sigmoid(-margin) / 6           # d/d pi_w of the mean loss, negated
    torch.testing.assert_close(pi_w.grad, -weight)
    torch.testing.assert_close(pi_l.grad, weight)


def test_ch16_dpo_loss_is_finite_for_huge_margins(impl):
    # beta m = -500: log(sigmoid(-500)) underflows to -inf in float32; logsigmoid does not
    pi_w = torch.tensor([-5000.0], requires_grad=True)
    zero = torch.tensor([0.0])
    loss = impl("ch16_dpo").dpo_loss(pi_w, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(500.0, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pi_w.grad).all() and pi_w.grad.item() == pytest.approx(-0.1, rel=1e-5)
    tiny = impl("ch16_dpo").dpo_loss(-pi_w.detach(), zero, zero, zero, beta=0.1)
    assert 0 <= tiny.item() < 1e-30                         # beta m = +500: almost no loss
