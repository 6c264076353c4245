; lm_msr: MSR and base-register rules in IA-32e mode.
; qemu-args: -cpu max,vendor=GenuineIntel
;
; Covers:
;  * The x2APIC MSRs (0x800-0x8FF) raise #GP(0) on RDMSR and WRMSR while the local APIC is not in
;    x2APIC mode (SDM vol. 3A 11.12.1.2). If CPUID.1:ECX.x2APIC[21] is clear, setting IA32_APIC_BASE.EXTD
;    is #GP (a reserved bit); if it is set, the ROM enables x2APIC mode and checks that the ID, version
;    and TPR MSRs work, that write-only/read-only/absent registers (EOI read, SELF IPI read, ID write,
;    0x831, DFR 0x80E) and reserved bits (TPR 31:8, ESR non-zero) are #GP, and that leaving x2APIC
;    mode straight for xAPIC is #GP (11.12.5) while going through the disabled state works.
;  * IA32_APIC_BASE: EXTD without EN and the reserved bits 0-7 and 9 are #GP.
;  * Non-canonical values are #GP(0) for WRMSR of IA32_FS_BASE, IA32_GS_BASE, IA32_KERNEL_GS_BASE,
;    IA32_LSTAR, IA32_CSTAR, IA32_SYSENTER_EIP and IA32_SYSENTER_ESP (WRMSR, "Protected Mode
;    Exceptions"; 5.8.7 for the SYSENTER MSRs), and for WRFSBASE/WRGSBASE; canonical values are stored.
;  * LTR and LLDT of a 16-byte descriptor with a non-canonical base, or with a non-zero type in the
;    upper eight bytes, are #GP(selector) (LTR/LLDT, figure 8-4); a canonical upper half loads.
;  * Reserved bits: EFER bit 1, IA32_FMASK 63:32, IA32_TSC_AUX 63:32, PAT entries of type 2/3,
;    MTRRdefType type 2, a variable-range MTRR base of type 7, IA32_MCG_CAP read-only, and
;    IA32_FEATURE_CONTROL after its lock bit.
;
; QEMU quirks (-DQEMU_QUIRKS skips them; only the canonical stores, WRGSBASE's store, LTR's upper-type
; check and the canonical LTR/LLDT loads run under QEMU): QEMU 7.2 TCG raises no #GP for an MSR it
; does not know or a reserved bit (x2APIC MSRs outside x2APIC mode read 0, EFER/FMASK/TSC_AUX/PAT/MTRR/
; FEATURE_CONTROL/MCG_CAP writes are masked or ignored: target/i386/tcg/sysemu/misc_helper.c
; helper_rdmsr/helper_wrmsr), stores non-canonical values into the base MSRs and through WRFSBASE/
; WRGSBASE, loads non-canonical TSS/LDT bases, and checks the upper type only for LTR (seg_helper.c
; helper_ltr/helper_lldt). The SDM rules above are what the test follows.
%include "common.inc"
%include "longmode.inc"
        cpu any                         ; WRFSBASE/WRGSBASE

SEL_TSS2 equ LM_SEL_FREE            ; 16-byte TSS descriptor under test
SEL_LDT2 equ LM_SEL_FREE + 0x10     ; 16-byte LDT descriptor under test

%macro WRMSR64 2
        mov ecx, %1
        mov rax, %2
        mov rdx, rax
        shr rdx, 32
        wrmsr
%endmacro

; WR_GP msr, value, "name": WRMSR raises #GP(0).
%macro WR_GP 3
        TRY
        WRMSR64 %1, %2
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, %3
        CHECK64 [LM_EXC_ERR], 0, %3
%endmacro

; RD_GP msr, "name": RDMSR raises #GP(0).
%macro RD_GP 2
        TRY
        mov ecx, %1
        rdmsr
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, %2
%endmacro

; WR_OK msr, value, "name": WRMSR succeeds and RDMSR reads the value back.
%macro WR_OK 3
        TRY
        WRMSR64 %1, %2
        ENDTRY
        CHECK64 [LM_EXC_VEC], -1, %3
        mov ecx, %1
        rdmsr
        shl rdx, 32
        or rax, rdx
        mov rbx, %2
        CHECK64 rax, rbx, %3
%endmacro

; DESC16 at, type, base: writes a present 16-byte system descriptor (limit 0x67) at GDT offset `at`,
; upper type bits from rdx (bits 12:8 of the high dword).
%macro DESC16 3
        mov rdi, LM_GDT + %1
        mov rax, %3
        mov rbx, rax
        and rbx, 0xFFFFFF
        shl rbx, 16
        or rbx, 0x67
        mov rcx, (%2 | 0x80)
        shl rcx, 40
        or rbx, rcx
        mov rcx, rax
        shr rcx, 24
        and rcx, 0xFF
        shl rcx, 56
        or rbx, rcx
        mov [rdi], rbx
        shr rax, 32
        shl rdx, 40
        or rax, rdx
        mov [rdi + 8], rax
%endmacro

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
%ifndef QEMU_QUIRKS
        ; ------------------------------------------------ x2APIC range outside x2APIC mode
        mov ecx, 0x1B
        rdmsr
        and eax, 0xC00
        CHECK64 rax, 0x800, "IA32_APIC_BASE: xAPIC mode (EN, not EXTD) after reset"
        RD_GP 0x802, "rdmsr x2APIC ID outside x2APIC mode: #GP"
        RD_GP 0x803, "rdmsr x2APIC version outside x2APIC mode: #GP"
        RD_GP 0x830, "rdmsr x2APIC ICR outside x2APIC mode: #GP"
        WR_GP 0x808, 0, "wrmsr x2APIC TPR outside x2APIC mode: #GP"
        WR_GP 0x80B, 0, "wrmsr x2APIC EOI outside x2APIC mode: #GP"
        WR_GP 0x83F, 0x40, "wrmsr x2APIC SELF IPI outside x2APIC mode: #GP"
        WR_GP 0x1B, 0xFEE00000 | 0x400, "IA32_APIC_BASE: EXTD without EN: #GP"
        WR_GP 0x1B, 0xFEE00900 | 0x200, "IA32_APIC_BASE: bit 9 reserved: #GP"
        WR_GP 0x1B, 0xFEE00900 | 0x001, "IA32_APIC_BASE: bit 0 reserved: #GP"
        mov eax, 1
        cpuid
        bt ecx, 21
        jc .x2apic
        WR_GP 0x1B, 0xFEE00D00, "IA32_APIC_BASE.EXTD without CPUID x2APIC: #GP"
        RD_GP 0x802, "still no x2APIC MSRs"
        jmp .x2done
.x2apic:
        WR_OK 0x1B, 0xFEE00D00, "enter x2APIC mode"
        mov ecx, 0x803
        rdmsr
        and eax, 0xFF
        CHECK64 rax, 0x14, "x2APIC version register reads (version 0x14)"
        WR_OK 0x808, 0x20, "x2APIC TPR read/write"
        WR_OK 0x808, 0, "x2APIC TPR back to 0"
        WR_GP 0x808, 0x100, "x2APIC TPR bit 8 reserved: #GP"
        RD_GP 0x80B, "x2APIC EOI is write-only: #GP"
        RD_GP 0x83F, "x2APIC SELF IPI is write-only: #GP"
        WR_GP 0x802, 0, "x2APIC ID is read-only: #GP"
        RD_GP 0x831, "no MSR 0x831 (ICR is one 64-bit MSR): #GP"
        RD_GP 0x80E, "no DFR in x2APIC mode: #GP"
        WR_GP 0x828, 1, "x2APIC ESR takes only 0: #GP"
        WR_GP 0x1B, 0xFEE00900, "x2APIC -> xAPIC directly: #GP"
        WR_OK 0x1B, 0xFEE00100, "x2APIC -> disabled"
        WR_OK 0x1B, 0xFEE00900, "disabled -> xAPIC"
.x2done:
        ; ------------------------------------------------ canonical bases
        WR_GP 0xC0000100, 0x0000800000000000, "IA32_FS_BASE non-canonical: #GP"
        WR_GP 0xC0000101, 0x8000000000000000, "IA32_GS_BASE non-canonical: #GP"
        WR_GP 0xC0000102, 0x00FF000000000000, "IA32_KERNEL_GS_BASE non-canonical: #GP"
        WR_GP 0xC0000082, 0x0000800000000000, "IA32_LSTAR non-canonical: #GP"
        WR_GP 0xC0000083, 0xFFFF7FFFFFFFFFFF, "IA32_CSTAR non-canonical: #GP"
        WR_GP 0x176, 0x0001000000000000, "IA32_SYSENTER_EIP non-canonical: #GP"
        WR_GP 0x175, 0x0001000000000000, "IA32_SYSENTER_ESP non-canonical: #GP"
%endif
        WR_OK 0xC0000102, 0xFFFF800000001000, "IA32_KERNEL_GS_BASE canonical stored"
        WR_OK 0xC0000082, 0x00007FFFFFFFF000, "IA32_LSTAR canonical stored"
        WR_OK 0x176, 0xFFFFFFFF80000000, "IA32_SYSENTER_EIP canonical stored"
        WRMSR64 0xC0000102, 0
        WRMSR64 0xC0000082, 0
        WRMSR64 0x176, 0
        ; WRFSBASE/WRGSBASE (CPUID.7:EBX.FSGSBASE[0], CR4.FSGSBASE[16])
        mov eax, 7
        xor ecx, ecx
        cpuid
        bt ebx, 0
        jnc .nofsgs
        mov rax, cr4
        bts rax, 16
        mov cr4, rax
%ifndef QEMU_QUIRKS
        TRY
        mov rax, 0x0000800000000000
        wrfsbase rax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "wrfsbase non-canonical: #GP"
        TRY
        mov rax, 0xFFFF000000000000
        wrgsbase rax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "wrgsbase non-canonical: #GP"
%endif
        mov rax, 0xFFFF800000002000
        wrgsbase rax
        rdgsbase rbx
        CHECK64 rbx, 0xFFFF800000002000, "wrgsbase canonical stored"
        xor eax, eax
        wrgsbase rax
        mov rax, cr4
        btr rax, 16
        mov cr4, rax
.nofsgs:
        ; ------------------------------------------------ LTR / LLDT with 16-byte descriptors
%ifndef QEMU_QUIRKS
        xor edx, edx
        DESC16 SEL_TSS2, 9, 0x0000800000003000
        TRY
        mov ax, SEL_TSS2
        ltr ax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "ltr non-canonical TSS base: #GP"
        CHECK64 [LM_EXC_ERR], SEL_TSS2, "ltr non-canonical TSS base: error code = selector"
        xor edx, edx
        DESC16 SEL_LDT2, 2, 0x8000000000000000
        TRY
        mov ax, SEL_LDT2
        lldt ax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "lldt non-canonical LDT base: #GP"
        CHECK64 [LM_EXC_ERR], SEL_LDT2, "lldt non-canonical LDT base: error code = selector"
%endif
        mov edx, 0x0F
        DESC16 SEL_TSS2, 9, 0xFFFF800000003000
        TRY
        mov ax, SEL_TSS2
        ltr ax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "ltr with a non-zero upper type: #GP"
        CHECK64 [LM_EXC_ERR], SEL_TSS2, "ltr with a non-zero upper type: error code = selector"
%ifndef QEMU_QUIRKS
        mov edx, 0x0F
        DESC16 SEL_LDT2, 2, 0xFFFF800000004000
        TRY
        mov ax, SEL_LDT2
        lldt ax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "lldt with a non-zero upper type: #GP"
%endif
        ; canonical upper halves load (then TR goes back to the ROM's own TSS)
        xor edx, edx
        DESC16 SEL_LDT2, 2, 0xFFFF800000004000
        mov ax, SEL_LDT2
        lldt ax
        sldt ax
        movzx eax, ax
        CHECK64 rax, SEL_LDT2, "lldt canonical 64-bit base"
        xor eax, eax
        lldt ax
        xor edx, edx
        DESC16 SEL_TSS2, 9, 0xFFFF800000003000
        mov ax, SEL_TSS2
        ltr ax
        str ax
        movzx eax, ax
        CHECK64 rax, SEL_TSS2, "ltr canonical 64-bit base"
        mov byte [LM_GDT + LM_SEL_TSS + 5], 0x89   ; the ROM's TSS: available again
        mov ax, LM_SEL_TSS
        ltr ax
        ; ------------------------------------------------ reserved bits
        WR_OK 0xC0000084, 0x00000000FFFFFFFF, "IA32_FMASK 31:0 stored"
        WRMSR64 0xC0000084, 0
%ifndef QEMU_QUIRKS
        WR_GP 0xC0000080, 0x502, "EFER bit 1 reserved: #GP"
        WR_GP 0xC0000084, 0x0000000100000000, "IA32_FMASK 63:32 reserved: #GP"
        WR_GP 0xC0000103, 0x0000000100000000, "IA32_TSC_AUX 63:32 reserved: #GP"
        WR_GP 0x277, 0x0007040600070402, "PAT entry of type 2: #GP"
        WR_GP 0x277, 0x0007040600070403, "PAT entry of type 3: #GP"
        WR_GP 0x2FF, 0xC02, "MTRRdefType of type 2: #GP"
        WR_GP 0x200, 0x0000000000000007, "MTRR PHYSBASE0 of type 7: #GP"
        WR_GP 0x179, 0, "IA32_MCG_CAP is read-only: #GP"
        WR_GP 0x3A, 0x2, "IA32_FEATURE_CONTROL: VMX bit without VMX: #GP"
%endif
        jmp finish64

%include "reset.inc"
