use super::*;

#[test]
fn new_jit_on_this_host() {
    let j = Jit::new().expect("cranelift supports x86-64");
    assert_eq!(j.stats(), Stats::default());
}
