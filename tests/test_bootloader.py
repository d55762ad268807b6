"""The simulated pen's bootloader (spec 1.1, "Firmware update"), through real frames:
UPDATING, the chunk store, every check of FW_COMMIT, the watchdog, A/B slots and
rollback; and what an update changes in the pen."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from test_pen_security import SecureBench

from devicectl.firmware import CHUNK_BYTES, SIM_HW_ID, chunks, read_image, sign_with_test_key
from devicectl.protocol import (
    Capability,
    DeviceInfo,
    Event,
    FaultBit,
    FwAbort,
    FwBegin,
    FwChunk,
    FwCommit,
    Hello,
    Nack,
    PenEvent,
    PenState,
    SetTarget,
    Start,
)
from firmware_sim.bootloader import IMAGES_DIR, Slots, load_slots

UPDATE = int(Capability.POSITION | Capability.CONTACT | Capability.UPDATE)
GOOD = (IMAGES_DIR / "pen-1.2.penf").read_bytes()
BAD = (IMAGES_DIR / "pen-1.3-bad.penf").read_bytes()
PERSONALITY_1_2 = (IMAGES_DIR / "pen-1.2.yaml").read_bytes()


def status(b: SecureBench, msg: object) -> Nack:
    return Nack(b.ack(msg).message.status)  # type: ignore[arg-type,union-attr]


def begin(b: SecureBench, image: bytes, version: int | None = None) -> Nack:
    fw_version = version if version is not None else read_image(image).fw_version
    return status(b, FwBegin(len(image), zlib.crc32(image), fw_version))


def send_all(b: SecureBench, image: bytes) -> None:
    for offset, data in chunks(read_image(image)):
        assert status(b, FwChunk(offset, data)) is Nack.OK


def updated(image: bytes, *, capabilities: int = UPDATE) -> tuple[SecureBench, Nack]:
    b = SecureBench(capabilities)
    b.send(Hello(1, 1))
    assert begin(b, image) is Nack.OK and b.fw.state is PenState.UPDATING
    send_all(b, image)
    return b, status(b, FwCommit())


def info_after_restart(b: SecureBench) -> tuple[DeviceInfo, list[Event]]:
    mark = len(b.frames)
    b.send(Hello(1, 2))
    new = [f.message for f in b.frames[mark:]]
    info = next(m for m in new if isinstance(m, DeviceInfo))
    return info, [m for m in new if isinstance(m, Event)]


def test_good_image_restarts_the_pen_into_the_new_version_with_fw_updated() -> None:
    b, answer = updated(GOOD)
    assert answer is Nack.OK and b.fw.state is PenState.BOOT
    info, events = info_after_restart(b)
    assert info.fw_version == 0x0102
    assert [e.event for e in events] == [PenEvent.FW_UPDATED]
    assert b.fw.boot.slots.active == "B" and b.fw.boot.slots.images["B"] == GOOD


def test_firmware_1_2_fixes_the_overshoot_no_limit_bug() -> None:
    old = SecureBench(UPDATE)
    old.fw.depth_limit_enabled = False  # what the overshoot-no-limit scenario does
    assert not old.fw.depth_limit_enabled
    b, _ = updated(GOOD)
    b.fw.depth_limit_enabled = False
    assert b.fw.depth_limit_enabled


def test_image_failing_its_first_self_test_rolls_back_with_fw_rollback() -> None:
    b, answer = updated(BAD)
    assert answer is Nack.OK  # it passed every check; the self-test runs at its first start
    info, events = info_after_restart(b)
    assert info.fw_version == 0x0101 and [e.event for e in events] == [PenEvent.FW_ROLLBACK]
    assert b.fw.boot.slots.active == "A" and b.fw.boot.slots.images["B"] is None


def test_spec_vector_image_is_signed_but_not_a_personality_so_it_rolls_back() -> None:
    vector = sign_with_test_key(SIM_HW_ID, 0x0102, b"pen firmware 1.2\n")
    b, answer = updated(vector)
    assert answer is Nack.OK
    assert [e.event for e in info_after_restart(b)[1]] == [PenEvent.FW_ROLLBACK]


def test_corrupted_chunk_fails_the_crc_and_is_nacked_bad_image() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    assert begin(b, GOOD) is Nack.OK
    parts = chunks(read_image(GOOD))
    for offset, data in parts:
        if offset == CHUNK_BYTES:
            data = bytes([data[0] ^ 1]) + data[1:]
        assert status(b, FwChunk(offset, data)) is Nack.OK
    assert status(b, FwCommit()) is Nack.BAD_IMAGE and b.fw.boot.refusal is not None
    assert "CRC" in b.fw.boot.refusal
    assert b.fw.state is PenState.UPDATING and b.fw.pen.fw_version == 0x0101


def test_tampered_image_with_a_matching_crc_fails_the_signature() -> None:
    tampered = GOOD.replace(b"self_test: pass", b"self_test: PASS")
    b, answer = updated(tampered)
    assert answer is Nack.BAD_IMAGE and b.fw.boot.refusal == "signature"


def test_image_for_another_hardware_id_is_refused() -> None:
    other = sign_with_test_key(SIM_HW_ID + 1, 0x0102, PERSONALITY_1_2)
    b, answer = updated(other)
    assert answer is Nack.BAD_IMAGE and "hardware id" in (b.fw.boot.refusal or "")


def test_downgrade_is_refused() -> None:
    older = sign_with_test_key(SIM_HW_ID, 0x0100, PERSONALITY_1_2)
    b, answer = updated(older)
    assert answer is Nack.BAD_IMAGE and b.fw.boot.refusal == "downgrade"


def test_missing_chunk_is_refused() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    for offset, data in chunks(read_image(GOOD))[1:]:
        status(b, FwChunk(offset, data))
    assert status(b, FwCommit()) is Nack.BAD_IMAGE and b.fw.boot.refusal == "chunks missing"


def test_chunk_sent_twice_has_the_effect_of_one() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    parts = chunks(read_image(GOOD))
    for offset, data in parts + parts[:2]:
        assert status(b, FwChunk(offset, data)) is Nack.OK
    assert status(b, FwCommit()) is Nack.OK


@pytest.mark.parametrize("offset", [1, 39, 10_000])
def test_chunk_offset_not_a_multiple_of_40_or_past_the_end_is_bad_arg(offset: int) -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    assert status(b, FwChunk(offset, bytes(40))) is Nack.BAD_ARG


@pytest.mark.parametrize("size", [0, (1 << 20) + 1])
def test_fw_begin_with_size_0_or_over_1_mib_is_bad_arg(size: int) -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    assert status(b, FwBegin(size, 0, 0x0102)) is Nack.BAD_ARG and b.fw.state is PenState.IDLE


def test_fw_begin_while_stamping_is_bad_state_and_chunk_outside_updating_too() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    assert status(b, FwChunk(0, bytes(40))) is Nack.BAD_STATE
    status(b, SetTarget(800, 1000, 2))
    status(b, Start())
    b.run(50_000)
    assert begin(b, GOOD) is Nack.BAD_STATE and b.fw.state is PenState.STAMPING


def test_fw_abort_returns_to_idle_with_nothing_changed() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    send_all(b, GOOD)
    assert status(b, FwAbort()) is Nack.OK and b.fw.state is PenState.IDLE
    assert b.fw.pen.fw_version == 0x0101 and b.fw.boot.slots == Slots()


def test_link_lost_mid_update_latches_watchdog_and_abandons_the_update() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    for offset, data in chunks(read_image(GOOD))[:3]:
        status(b, FwChunk(offset, data))
    for _ in range(200):  # the host falls silent: no heartbeats
        b.now_us += 1000
        b.fw.tick(b.now_us)
    assert b.fw.state is PenState.FAULT and b.fw.fault_flags & (1 << FaultBit.WATCHDOG)
    assert status(b, FwCommit()) is Nack.BAD_STATE
    assert b.fw.pen.fw_version == 0x0101


def test_telemetry_goes_on_in_updating_and_reports_state_5() -> None:
    b = SecureBench(UPDATE)
    b.send(Hello(1, 1))
    begin(b, GOOD)
    b.run(20_000)
    from devicectl.protocol import Telemetry

    tel = [f.message for f in b.frames if isinstance(f.message, Telemetry)]
    assert tel[-1].state == PenState.UPDATING and tel[-1].rate_meas_dhz == 0


def test_pen_without_update_capability_nacks_fw_commands_unknown_type() -> None:
    b = SecureBench(int(Capability.POSITION))
    b.send(Hello(1, 1))
    assert begin(b, GOOD) is Nack.UNKNOWN_TYPE


def test_slots_survive_a_state_file(tmp_path: Path) -> None:
    b, _ = updated(GOOD)
    path = tmp_path / "pen.json"
    path.write_text(b.fw.boot.slots.to_json())
    again = load_slots(path)
    assert again == b.fw.boot.slots and load_slots(tmp_path / "none.json") == Slots()
