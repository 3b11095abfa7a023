from __future__ import annotations

import torch

from qimia.attention.ram import GlimpseSensor, RAMConfig, RecurrentAttentionModel, ram_loss


def test_glimpse_at_centre_is_the_central_crop():
    img = torch.arange(64.0).view(1, 1, 8, 8)
    sensor = GlimpseSensor(patch=4, scales=1)
    rho = sensor(img, torch.zeros(1, 2))
    torch.testing.assert_close(rho.view(4, 4), img[0, 0, 2:6, 2:6])


def test_location_convention_and_zero_padding():
    img = torch.arange(64.0).view(1, 1, 8, 8) + 1
    sensor = GlimpseSensor(patch=2, scales=1)
    # (x, y) = (-1, -1) is the top-left corner: the window straddles it, 3 of 4 pixels are padding
    crop = sensor.extract(img, torch.tensor([[-1.0, -1.0]]), 2)[0, 0]
    torch.testing.assert_close(crop, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    # moving x right moves the window along columns
    right = sensor.extract(img, torch.tensor([[0.25, 0.0]]), 2)[0, 0]  # centre at pixel column 4.5
    torch.testing.assert_close(right, img[0, 0, 3:5, 4:6])


def test_coarser_scales_are_average_pooled_larger_windows():
    torch.manual_seed(0)
    img = torch.rand(2, 1, 16, 16)
    sensor = GlimpseSensor(patch=4, scales=3)
    rho = sensor(img, torch.zeros(2, 2)).view(2, 3, 4, 4)
    torch.testing.assert_close(rho[:, 1], torch.nn.functional.avg_pool2d(img[:, 0, 4:12, 4:12], 2))
    torch.testing.assert_close(rho[:, 2], torch.nn.functional.avg_pool2d(img[:, 0], 4))


def small_ram(**kw):
    torch.manual_seed(0)
    return RecurrentAttentionModel(RAMConfig(patch=4, scales=2, glimpse_hidden=16, glimpse_size=32, hidden=32,
                                             glimpses=4, **kw))


def test_reinforce_reaches_location_net_only_through_log_prob():
    model = small_ram()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    logits, log_probs, baselines, locs = model(x)
    assert logits.shape == (8, 10) and log_probs.shape == (8, 3) and locs.shape == (8, 4, 2)
    loss = ram_loss(logits, y, log_probs, baselines)
    # classification loss: no gradient to location or baseline nets (sampled locations are detached)
    grads = torch.autograd.grad(loss.classification, [model.location_net.weight, model.baseline_net.weight,
                                                      model.core_h.weight], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2].abs().sum() > 0
    # REINFORCE term: gradient to the location net only, not to the core
    grads = torch.autograd.grad(loss.reinforce, [model.location_net.weight, model.core_h.weight,
                                                 model.baseline_net.weight], allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1] is None and grads[2] is None
    # baseline MSE: only the baseline net
    grads = torch.autograd.grad(loss.baseline, [model.baseline_net.weight, model.core_h.weight], allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[1] is None


def test_log_prob_is_gaussian_density():
    model = small_ram(std=0.2)
    out = model.step(torch.rand(3, 1, 8, 8), model.initial_state(torch.rand(3, 1, 8, 8)))
    loc = out.state.location
    expected = torch.distributions.Normal(out.mean, 0.2).log_prob(loc).sum(-1)
    inside = (loc.abs() < 1).all(-1)  # clamping at the border changes loc after log-prob
    torch.testing.assert_close(out.log_prob[inside], expected[inside])


def test_baseline_learns_the_mean_reward():
    model = small_ram()
    opt = torch.optim.SGD(model.baseline_net.parameters(), lr=0.5)
    x = torch.rand(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,))
    for _ in range(100):
        logits, lp, b, _ = model(x)
        loss = ram_loss(logits, y, lp, b)
        opt.zero_grad()
        loss.baseline.backward()
        opt.step()
    with torch.no_grad():
        logits, lp, b, _ = model(x)
    reward = (logits.argmax(-1) == y).float().mean()
    assert abs(b.mean().item() - reward.item()) < 0.05
