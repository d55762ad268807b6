"""The host's firmware update (devicectl/fw_update.py) against the simulated pen, through
real bytes in virtual time: 1.1 to 1.2, a signed link, a dropped link survived by
beginning again, and each failure the spec names with its own message."""

from __future__ import annotations

from dataclasses import replace

from devicectl.commands.firmware_cmd import drive_virtual
from devicectl.firmware import SIM_HW_ID, load_image, read_image, sign_with_test_key
from devicectl.fw_update import Step, Updater
from devicectl.protocol import Capability, PenState
from devicectl.signing import sim_device_key
from firmware_sim.bootloader import IMAGES_DIR
from firmware_sim.physics import PenParams
from firmware_sim.virtual import VirtualPen

GOOD = load_image(IMAGES_DIR / "pen-1.2.penf")
BAD = load_image(IMAGES_DIR / "pen-1.3-bad.penf")
REQUIRED = int(Capability.AUTH | Capability.AUTH_REQUIRED)


def no_keys(_serial: int) -> bytes | None:
    return None


def pen(capabilities: int = 0) -> VirtualPen:
    base = PenParams()
    return VirtualPen(seed=1, pen=replace(base, capabilities=base.capabilities | capabilities))


def update(vpen: VirtualPen, image: object = GOOD, keys: object = no_keys) -> Updater:
    updater = Updater(image, key_for=keys, now_us=0)  # type: ignore[arg-type]
    drive_virtual(updater, vpen, 0)
    return updater


def test_update_takes_the_simulated_pen_from_1_1_to_1_2() -> None:
    vpen = pen()
    assert vpen.firmware.pen.fw_version == 0x0101
    u = update(vpen)
    assert u.step is Step.DONE and u.error is None and u.running_version == 0x0102
    assert vpen.firmware.pen.fw_version == 0x0102


def test_update_of_an_auth_required_pen_runs_over_the_signed_link() -> None:
    vpen = pen(REQUIRED)
    u = update(vpen, keys=sim_device_key)
    assert u.step is Step.DONE and u.running_version == 0x0102


def test_auth_required_pen_with_a_wrong_key_is_refused() -> None:
    u = update(pen(REQUIRED), keys=lambda _s: bytes(32))
    assert u.step is Step.FAILED and "could not prove its key" in (u.error or "")


def test_pen_without_auth_whose_key_the_keyring_holds_is_refused() -> None:
    u = update(pen(), keys=sim_device_key)
    assert u.step is Step.FAILED and "no downgrade" in (u.error or "")


def test_auth_pen_with_no_key_in_the_keyring_is_refused_with_the_command_to_fix_it() -> None:
    u = update(pen(REQUIRED))
    assert u.step is Step.FAILED and "devicectl keys add 100042" in (u.error or "")


def test_bad_image_rolls_back_and_says_so() -> None:
    vpen = pen()
    u = update(vpen, BAD)
    assert u.step is Step.FAILED and "failed its self-test" in (u.error or "")
    assert "runs 1.1" in (u.error or "") and vpen.firmware.pen.fw_version == 0x0101


def test_tampered_image_is_refused_by_the_pen_which_stays_idle() -> None:
    tampered = read_image(GOOD.data.replace(b"self_test: pass", b"self_test: PASS"))
    vpen = pen()
    u = update(vpen, tampered)
    assert u.step is Step.FAILED and "BAD_IMAGE" in (u.error or "")
    assert vpen.firmware.state is PenState.IDLE and vpen.firmware.pen.fw_version == 0x0101


def test_host_refuses_a_downgrade_before_sending_anything() -> None:
    vpen = pen()
    update(vpen)
    older = read_image(sign_with_test_key(SIM_HW_ID, 0x0101, b"version: '1.1'\n"))
    u = update(vpen, older)
    assert u.step is Step.FAILED and "no downgrade" in (u.error or "") and u.progress[0] == 0


def update_with_a_cut(vpen: VirtualPen, keys: object = no_keys) -> Updater:
    """An update whose cable drops for 400 ms once the pen has acknowledged 4 chunks."""
    u = Updater(GOOD, key_for=keys, now_us=0)  # type: ignore[arg-type]
    now = 0
    vpen.receive_data(u.start(now), now)
    cut_until = None
    while not u.done and now < 30_000_000:
        now += 1000
        if cut_until is None and u.acked_chunks == 4:
            cut_until = now + 400_000  # the cable drops for 400 ms mid-transfer
        cut = cut_until is not None and now < cut_until
        from_pen = vpen.advance(now)
        out = u.receive_data(b"" if cut else from_pen, now) + u.tick(now)
        if out and not cut:
            vpen.receive_data(out, now)
    assert cut_until is not None
    return u


def test_link_lost_mid_update_is_survived_by_beginning_again() -> None:
    vpen = pen()
    u = update_with_a_cut(vpen)
    assert any("beginning again" in n for n in u.notes)
    assert u.step is Step.DONE and vpen.firmware.pen.fw_version == 0x0102


def test_progress_reaches_the_whole_image() -> None:
    u = update(pen())
    assert u.progress == (len(GOOD.data), len(GOOD.data))


def test_an_unfinished_earlier_update_is_aborted_and_the_update_begins_again() -> None:
    from devicectl.protocol import FwBegin, Hello, encode

    vpen = pen()
    vpen.receive_data(encode(Hello(1, 1), 0) + encode(FwBegin(80, 0, 0x0102), 1), 0)
    vpen.advance(1000)
    assert vpen.firmware.state is PenState.UPDATING
    u = Updater(GOOD, key_for=no_keys, now_us=2000)
    drive_virtual(u, vpen, 2000)
    assert u.step is Step.DONE and vpen.firmware.pen.fw_version == 0x0102


def test_a_pen_holding_another_connections_secure_session_is_refused_in_words() -> None:
    """Spec 1.1: once secure the pen NACKs an unsigned AUTH_BEGIN (AUTH); the updater,
    which cannot sign with a session it never held, fails at once with the way out
    (it used to wait there until the link was given up)."""
    vpen = pen(REQUIRED)
    first = Updater(GOOD, key_for=sim_device_key, now_us=0)
    vpen.receive_data(first.start(0), 0)
    now = 0
    while first.step is not Step.PREPARING and now < 2_000_000:
        now += 500
        vpen.receive_data(first.receive_data(vpen.advance(now), now) + first.tick(now), now)
    assert vpen.firmware.auth is not None and vpen.firmware.auth.session is not None
    second = Updater(GOOD, key_for=sim_device_key, now_us=now)
    drive_virtual(second, vpen, now)
    assert second.step is Step.FAILED
    assert "switch it off and on" in (second.error or ""), second.error


def test_a_lost_auth_confirm_costs_a_resend_not_an_attempt() -> None:
    """Spec 1.1: frames are signed once AUTH_CONFIRM is accepted (its ACK is the pen's
    first signed frame), and an ACK_REQ frame not ACKed is sent again, same content. The
    updater signed from the send of AUTH_CONFIRM, its resend too, which the pen (no
    session yet) dropped: the update began again from HELLO (aud11spec's note)."""
    from test_secure_session import DropFirst

    from devicectl.protocol import AuthConfirm

    vpen = pen(REQUIRED)
    u = Updater(GOOD, key_for=sim_device_key, now_us=0)
    vpen.receive_data(u.start(0), 0)
    lose_the_confirm = DropFirst(lambda m: isinstance(m, AuthConfirm))
    now = 0
    while not u.done and now < 60_000_000:
        now += 500
        kept = lose_the_confirm(u.receive_data(vpen.advance(now), now) + u.tick(now), now)
        if kept:
            vpen.receive_data(kept, now)
    assert lose_the_confirm.lost and u.step is Step.DONE, (u.error, u.notes)
    assert u.attempt == 1 and not u.notes, u.notes


def test_a_dropped_link_mid_update_of_a_secure_pen_is_survived_by_beginning_again() -> None:
    """fw_update.py's docstring: "a link that drops ... is survived by beginning again".
    With a pen on the authenticated link it was not: the pen still holds the update's
    secure session, so it NACKs the new, unsigned AUTH_BEGIN (spec 1.1), and the updater
    failed, telling the technician the session was "another connection's" and to switch
    the pen off and on. The controller signs that AUTH_BEGIN with the session it held
    (controller_auth.LinkAuth.previous); the updater now shares LinkAuth and does too."""
    vpen = pen(REQUIRED)
    u = update_with_a_cut(vpen, sim_device_key)
    # the pen held the update's session when the cable dropped
    assert any("signed with it" in n for n in u.notes), u.notes
    assert any("beginning again" in n for n in u.notes), u.notes
    assert u.step is Step.DONE, u.error
    assert vpen.firmware.pen.fw_version == 0x0102
