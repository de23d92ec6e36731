"""Why pods are not ready, as the user reads it in status and Events."""

from modeldeploy.podstatus import SUMMARY_LIMIT, pod_problems


def pod(name, *containers, scheduled=None):
    status = {"containerStatuses": list(containers)}
    if scheduled is not None:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", **scheduled}]
    return {"metadata": {"name": name}, "status": status}


def waiting(reason, message=None, last=None):
    state = {"reason": reason, **({"message": message} if message else {})}
    container = {"name": "modelserver", "ready": False, "state": {"waiting": state}}
    return {**container, "lastState": {"terminated": last}} if last else container


def test_a_crash_loop_names_the_last_exit_and_the_servers_termination_message():
    crashed = waiting(
        "CrashLoopBackOff",
        "back-off 10s restarting failed container",
        last={
            "exitCode": 1,
            "reason": "Error",
            "message": "model sha256 mismatch: want ab, got cd\n",
        },
    )
    assert pod_problems([pod("fraud-canary-1", crashed)]) == (
        "pod fraud-canary-1: container modelserver CrashLoopBackOff, exited with code 1: "
        "model sha256 mismatch: want ab, got cd"
    )


def test_an_image_that_cannot_be_pulled_says_so():
    pulled = waiting("ErrImagePull", "pull access denied for registry.example/ms:9")
    assert pod_problems([pod("p", pulled)]) == (
        "pod p: container modelserver ErrImagePull: pull access denied for registry.example/ms:9"
    )


def test_pods_that_cannot_be_scheduled_say_why():
    unschedulable = pod(
        "p", scheduled={"reason": "Unschedulable", "message": "0/3 nodes are available: cpu"}
    )
    assert pod_problems([unschedulable]) == "pod p: Unschedulable: 0/3 nodes are available: cpu"


def test_a_normal_start_is_not_a_problem():
    starting = waiting("ContainerCreating")
    ready = {"name": "modelserver", "ready": True, "state": {"running": {}}}
    assert pod_problems([pod("a", starting), pod("b", ready)]) is None
    assert pod_problems([]) is None


def test_pods_with_the_same_problem_are_counted_once():
    pulled = waiting("ImagePullBackOff")
    summary = pod_problems([pod("c", pulled), pod("a", pulled), pod("b", pulled)])
    assert summary == "pod a: container modelserver ImagePullBackOff (and 2 more pods alike)"


def test_a_huge_termination_message_is_cut():
    crashed = waiting("CrashLoopBackOff", last={"exitCode": 2, "message": "x" * 10_000})
    summary = pod_problems([pod(f"p{i}", crashed) for i in range(3)] + [pod("q", waiting("Err"))])
    assert summary is not None
    assert len(summary) <= SUMMARY_LIMIT
