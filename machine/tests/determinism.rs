//! Two runs of a ROM that mixes PIT, RTC and PM-timer-driven busy loops with interrupts deliver the same
//! interrupts (vector and instruction count) in the same order.

use machine::{Machine, MachineConfig, RunOutcome};
use std::cell::RefCell;
use std::rc::Rc;

fn trace(rom: &str) -> (RunOutcome, Vec<u8>) {
    let image = test_roms::rom(rom).expect("ROM");
    let mut m = Machine::new(MachineConfig::new(32 << 20, image.to_vec())).expect("machine");
    let log = Rc::new(RefCell::new(Vec::new()));
    let l2 = log.clone();
    m.board.irq_trace = Some(Box::new(move |v, icount| {
        let mut l = l2.borrow_mut();
        l.push(v);
        l.extend_from_slice(&icount.to_le_bytes());
    }));
    let out = m.run(Some(200_000_000));
    let bytes = log.borrow().clone();
    (out, bytes)
}

#[test]
fn interrupt_trace_is_identical_across_runs() {
    for rom in ["chip_pit_pic", "chip_rtc"] {
        let (o1, t1) = trace(rom);
        let (o2, t2) = trace(rom);
        assert_eq!(o1, RunOutcome::Exited(1), "{rom} passes");
        assert_eq!(o1, o2);
        assert!(t1.len() > 9 * 100, "{rom}: {} interrupts traced", t1.len() / 9);
        assert!(t1 == t2, "{rom}: interrupt traces differ");
    }
}
