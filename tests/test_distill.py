"""Knowledge distillation between YOLO heads: what pulls the student, and what does not."""

import pytest
import torch

from models import create
from training.loop.distill import DistillationLoss


def _raw_maps(seed: int, size: int = 64, obj_logit: float | None = None):
    torch.manual_seed(seed)
    model = create("yolov3", width=0.25, input_size=size, num_classes=1, new_coords=True).train()
    maps = [r.detach().clone() for r in model(torch.rand(2, 3, size, size))]
    if obj_logit is not None:
        for r in maps:
            r.view(r.shape[0], 3, -1, *r.shape[2:])[:, :, 4] = obj_logit
    return model.config, maps


def test_a_student_equal_to_its_teacher_feels_no_pull():
    config, teacher = _raw_maps(0)
    student = [t.clone().requires_grad_(True) for t in teacher]
    loss, value = DistillationLoss(config)(student, teacher)
    loss.backward()
    assert value > 0  # the objectness term is the teacher's entropy, not zero ...
    assert max(float(s.grad.abs().max()) for s in student) < 1e-6  # ... but its gradient is


def test_the_student_is_pulled_towards_the_teacher():
    config, teacher = _raw_maps(0)
    _, other = _raw_maps(1)
    kd = DistillationLoss(config)
    student = [o.clone().requires_grad_(True) for o in other]
    loss, _ = kd(student, teacher)
    loss.backward()
    with torch.no_grad():
        stepped = [s - 0.05 * s.grad / s.grad.abs().max() for s in student]
    assert float(kd(stepped, teacher)[0]) < float(loss.detach())  # gradient descent on it moves the student closer
    doubled = float(DistillationLoss(config, weight=2.0)(student, teacher)[0].detach())
    assert doubled == pytest.approx(2 * float(loss.detach()), rel=1e-5)


def test_boxes_are_only_taught_where_the_teacher_sees_an_object():
    config, background_teacher = _raw_maps(0, obj_logit=-30.0)  # the teacher sees nothing anywhere
    _, other = _raw_maps(1)
    kd = DistillationLoss(config)
    base = kd(other, background_teacher)[0]
    moved = [o.clone() for o in other]
    for r in moved:
        r.view(r.shape[0], 3, -1, *r.shape[2:])[:, :, :4] += 3.0  # different boxes, same objectness
    assert float(kd(moved, background_teacher)[0]) == pytest.approx(float(base), rel=1e-6)
    _, confident_teacher = _raw_maps(0, obj_logit=5.0)
    assert float(kd(moved, confident_teacher)[0]) > float(kd(other, confident_teacher)[0])


def test_heads_must_match():
    config, teacher = _raw_maps(0)
    _, bigger = _raw_maps(0, size=96)
    with pytest.raises(ValueError, match="same head layout"):
        DistillationLoss(config)(bigger, teacher)
