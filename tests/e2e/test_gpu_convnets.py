"""Convolutional nets on a real GPU: channels-last layout, fused batch norm and pooling.

Run on the GPU machine with ``pytest -m gpu tests/e2e/test_gpu_convnets.py -s`` (prints the
kernels per iteration); skipped elsewhere. Needs torchvision (models built from configs, no
weights downloaded).
"""

from __future__ import annotations

import pytest
import torch

import tilefuse
from tests.compile_check import assert_compiled

pytestmark = pytest.mark.gpu

TRANSPOSES = ("nchwToNhwc", "nhwcToNchw")
NHWC = "convolutions run as eager (cuDNN/oneDNN) calls, channels-last"


def _resnet18(dtype):
    # Imported here: a torchvision built for another torch raises RuntimeError on import,
    # which would break collection where these tests are skipped anyway.
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    return models.resnet18(num_classes=100).to("cuda", dtype)


def _gpu_kernels(fn) -> list[str]:
    """Names of the GPU kernels one call of ``fn`` launches."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


def test_resnet18_bf16_inference_is_channels_last_and_transpose_free():
    model = _resnet18(torch.float32).eval()
    x = torch.randn(8, 3, 224, 224, device="cuda")
    from tilefuse.report import collect_reports

    with torch.no_grad():
        reference = model(x)  # float32
        model_bf16, x_bf16 = model.to(torch.bfloat16), x.to(torch.bfloat16)
        eager = model_bf16(x_bf16)
        torch._dynamo.reset()
        tilefuse.reset()
        compiled = torch.compile(model_bf16, backend="tilefuse")
        with collect_reports() as reports:
            out = compiled(x_bf16)
        assert_compiled()
        assert {r.externs.get("convolution.default") for r in reports} == {NHWC}
        assert "max_pool2d_with_indices.default" not in reports[0].externs
        assert out.stride() == eager.stride()
        # At most 1.5x eager bf16's own error against float32.
        assert _rel_error(out, reference) <= 1.5 * _rel_error(eager, reference) + 1e-3
        kernels = _gpu_kernels(lambda: compiled(x_bf16))
    transposes = [k for k in kernels if any(t in k for t in TRANSPOSES)]
    ours = sum(len(r.kernels) for r in reports)
    print(f"\nresnet18 bf16 inference: {len(kernels)} GPU kernels per iteration "
          f"({ours} tilefuse kernels); transposes: {transposes}")  # fmt: skip
    assert not transposes, transposes


def _training_pair():
    """Two equal float32 ResNet-18s (the second compiled, after a reset), a batch of 8
    64x64 images and their targets: ``(model, twin, x, target, compiled twin)``."""
    model, twin = _resnet18(torch.float32), _resnet18(torch.float32)
    x = torch.randn(8, 3, 64, 64, device="cuda")
    target = torch.randint(0, 100, (8,), device="cuda")
    torch._dynamo.reset()
    tilefuse.reset()
    return model, twin, x, target, torch.compile(twin, backend="tilefuse")


def test_resnet18_fp32_training_step_matches_eager(monkeypatch):
    """The channels-last training path in float32, forced on (``auto`` keeps float32
    training graphs in eager's layout since its first H200 run: conv1's weight gradient
    came out 13% from eager's with TF32 on). TF32 is off here, so a difference is the
    layout's, not TF32's."""
    monkeypatch.setenv("TILEFUSE_CHANNELS_LAST", "1")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model, twin, x, target, compiled = _training_pair()
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(net, fn):
        net.zero_grad()
        loss = loss_fn(fn(x), target)
        loss.backward()
        return loss

    expected = step(model, model)
    actual = step(twin, compiled)
    assert_compiled(graphs=2)
    assert _rel_error(actual, expected) < 1e-3
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert _rel_error(b.grad, a.grad) < 1e-3, name
    for (name, a), b in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3, msg=name)
    kernels = _gpu_kernels(lambda: step(twin, compiled))
    transposes = [k for k in kernels if any(t in k for t in TRANSPOSES)]
    print(f"\nresnet18 fp32 training step: {len(kernels)} GPU kernels; "
          f"{len(transposes)} layout transposes")  # fmt: skip


def test_resnet18_bf16_autocast_training_step_is_channels_last_by_default():
    """Under ``auto`` a training graph is laid out channels-last where its convolutions run
    in half precision (autocast): no cuDNN transposes, and the loss and the gradients as
    close to the float32 step's as eager autocast's are: at most 1.5x its error, the
    worst gradient against eager's worst (the zoo's rule; a single BN weight's gradient
    may differ more, from statistics rounded to bf16 as the graph's meta says)."""
    model, twin, x, target, compiled = _training_pair()
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(net, fn, amp=True):
        net.zero_grad()
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            loss = loss_fn(fn(x), target)
        loss.backward()
        return loss, [p.grad.clone() for p in net.parameters()]

    ref_loss, ref_grads = step(model, model, amp=False)
    eager_loss, eager_grads = step(model, model)
    loss, grads = step(twin, compiled)
    assert_compiled(graphs=2)
    assert _rel_error(loss, ref_loss) <= 1.5 * _rel_error(eager_loss, ref_loss) + 1e-3
    eager_worst = max(_rel_error(e, r) for e, r in zip(eager_grads, ref_grads))
    ours_worst = max(_rel_error(o, r) for o, r in zip(grads, ref_grads))
    assert ours_worst <= 1.5 * eager_worst + 1e-3, (ours_worst, eager_worst)
    kernels = _gpu_kernels(lambda: step(twin, compiled))
    transposes = [k for k in kernels if any(t in k for t in TRANSPOSES)]
    print(f"\nresnet18 bf16 autocast training step: {len(kernels)} GPU kernels; "
          f"transposes: {transposes}")  # fmt: skip
    assert not transposes, transposes
