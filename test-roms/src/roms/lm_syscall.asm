; lm_syscall: fast system calls and privilege transfers in IA-32e mode.
;
; Covers: SYSCALL #UD while EFER.SCE = 0; STAR/LSTAR/SFMASK read-back; SYSCALL from 64-bit ring 3:
; RCX = next RIP, R11 = RFLAGS, RFLAGS &= ~SFMASK, CS/SS from STAR[47:32] (and +8), RSP not
; switched; SYSRET with REX.W to 64-bit ring 3 (CS = STAR[63:48]+16, SS = STAR[63:48]+8, RPL 3,
; RFLAGS from R11 with RF and reserved bits cleared, bit 1 set); SYSRET without REX.W to
; compatibility mode (CS = STAR[63:48], EIP = ECX); SYSRET at CPL 3 #GP(0); FS/GS bases through
; IA32_FS_BASE / IA32_GS_BASE (0xC0000100/101), loading FS with a selector sets the base from the
; descriptor, FS base + offset wraps at 2^64; SWAPGS exchanging IA32_GS_BASE with
; IA32_KERNEL_GS_BASE (0xC0000102), #GP(0) at CPL 3, #UD in compatibility mode; 64-bit call gates
; (16-byte descriptors): from ring 3 to ring 0 (stack from TSS.RSP0, SS = NULL, 8-byte pushes of
; SS, RSP, CS, RIP even for a m16:32 operand, RETFQ back to ring 3), same-privilege call through a
; gate (CS:RIP only), #GP(selector) for a gate with DPL < CPL and for a non-zero type in the gate's
; upper half.
; Not checked (QEMU 7.2 TCG differs from the SDM): #GP for non-canonical WRMSR to LSTAR/FS_BASE/
; GS_BASE/KERNEL_GS_BASE; arithmetic flags surviving SYSCALL when not in SFMASK.
; Vendor-specific, not tested: SYSCALL in compatibility mode (#UD on Intel, CSTAR on AMD).
; SYSENTER/SYSEXIT in IA-32e mode and RDTSCP are in lm_ext.asm (they need a non-default QEMU CPU).
; SDM Vol. 2 SYSCALL, SYSRET, SWAPGS, CALL (far, IA-32e call gates), RET (far), WRMSR; Vol. 3A
; 5.8.3.1 (IA-32e call gates), 5.8.8 (SYSCALL/SYSRET), 3.4.4 (FS/GS in 64-bit mode), 2.2.1 (MSRs).
; QEMU: default CPU (qemu64).
%include "common.inc"
%include "longmode.inc"

MSR_EFER    equ 0xC0000080
MSR_STAR    equ 0xC0000081
MSR_LSTAR   equ 0xC0000082
MSR_CSTAR   equ 0xC0000083
MSR_SFMASK  equ 0xC0000084
MSR_FSBASE  equ 0xC0000100
MSR_GSBASE  equ 0xC0000101
MSR_KGSBASE equ 0xC0000102

SEL_GATE3   equ LM_SEL_FREE          ; call gate DPL 3 -> sc_gate (16 bytes)
SEL_GATE0   equ LM_SEL_FREE + 16     ; call gate DPL 0 -> sc_gate
SEL_GATEBAD equ LM_SEL_FREE + 32     ; call gate DPL 3 with a non-zero type in the upper half
SEL_FSDESC  equ LM_SEL_FREE + 48     ; data segment, base 0x00345000

V           equ LM_USER + 0x100      ; variables (qwords)
SC_MODE     equ V + 0x00             ; 0: SYSRETQ to RCX, 1: SYSRETD to sc_compat
SC_RCX      equ V + 0x08
SC_R11      equ V + 0x10
SC_RFL      equ V + 0x18
SC_CS       equ V + 0x20
SC_SS       equ V + 0x28
SC_RSP      equ V + 0x30
SC_R11OUT   equ V + 0x38
U_RFL       equ V + 0x40
U_CS        equ V + 0x48
U_SS        equ V + 0x50
U_RSP       equ V + 0x58
CG_RSP      equ V + 0x60
CG_SS       equ V + 0x68
CG_COUNT    equ V + 0x70
CG_FRAME    equ V + 0x80             ; 4 qwords
U_RAX       equ V + 0xA0

SC_KSTACK   equ LM_IST3_TOP - 0x800  ; the SYSCALL handler's own stack

; WRMSR64 msr, value (clobbers RAX, RCX, RDX)
%macro WRMSR64 2
        mov ecx, %1
        mov rax, %2
        mov rdx, rax
        shr rdx, 32
        wrmsr
%endmacro
; RDMSR64 msr -> RAX (clobbers RCX, RDX)
%macro RDMSR64 1
        mov ecx, %1
        rdmsr
        shl rdx, 32
        or rax, rdx
%endmacro

rom_start:
        INIT16
        LM_ENTER main64

        bits 64
main64:
        ; ------------------------------------------------ SYSCALL needs EFER.SCE
        TRY
        syscall
        ENDTRY
        CHECK64 [LM_EXC_VEC], 6, "syscall with EFER.SCE=0: #UD"
        mov ecx, MSR_EFER
        rdmsr
        or eax, 1                       ; SCE
        wrmsr
        WRMSR64 MSR_STAR, (LM_SEL_UCODE32 << 48) | (LM_SEL_KCODE64 << 32) | 0x12345678
        WRMSR64 MSR_LSTAR, sc_handler
        WRMSR64 MSR_SFMASK, 0x40700     ; TF IF DF AC
        RDMSR64 MSR_STAR
        mov rbx, (LM_SEL_UCODE32 << 48) | (LM_SEL_KCODE64 << 32) | 0x12345678
        CHECK64 rax, rbx, "STAR read back"
        RDMSR64 MSR_SFMASK
        CHECK64 rax, 0x40700, "SFMASK read back"
        RDMSR64 MSR_LSTAR
        mov rbx, sc_handler
        CHECK64 rax, rbx, "LSTAR read back"
        ; (Not checked: WRMSR of a non-canonical value to LSTAR / FS_BASE / GS_BASE / KERNEL_GS_BASE is
        ; #GP(0) per SDM Vol. 2 WRMSR; QEMU 7.2 TCG accepts it.)

        ; ------------------------------------------------ SYSCALL / SYSRETQ from 64-bit ring 3
        mov qword [SC_MODE], 0
        mov qword [SC_R11OUT], 0x3002 | 0x40 | 0x10000 | 0x8 | 0x20   ; IOPL3 ZF RF + reserved bits 3, 5
        RING3_BEGIN
        mov rsp, LM_STACK3 - 0x28
        std
        stc
        syscall
sc_ret1:
        pushfq
        pop qword [U_RFL]
        cld
        mov eax, cs
        mov [U_CS], rax
        mov eax, ss
        mov [U_SS], rax
        mov [U_RSP], rsp
        RING3_END
        mov rbx, sc_ret1
        CHECK64 [SC_RCX], rbx, "syscall: RCX = return RIP"
        mov rax, [SC_R11]
        and eax, 0x3401 | 0x10000
        CHECK64 rax, 0x3401, "syscall: R11 = RFLAGS (IOPL3 DF CF)"
        ; (SDM SYSCALL: RFLAGS <- RFLAGS AND NOT FMASK, so CF would survive here; QEMU 7.2 TCG also
        ; clears the arithmetic flags on SYSCALL, so only the masked bits are checked.)
        mov rax, [SC_RFL]
        and eax, 0x40700
        CHECK64 rax, 0, "syscall: RFLAGS masked by SFMASK (DF cleared)"
        CHECK64 [SC_CS], LM_SEL_KCODE64, "syscall: CS = STAR[47:32]"
        CHECK64 [SC_SS], LM_SEL_KDATA, "syscall: SS = STAR[47:32] + 8"
        CHECK64 [SC_RSP], LM_STACK3 - 0x28, "syscall: RSP not switched"
        CHECK64 [U_CS], LM_SEL_UCODE64 | 3, "sysretq: CS = STAR[63:48] + 16, RPL 3"
        CHECK64 [U_SS], LM_SEL_UDATA | 3, "sysretq: SS = STAR[63:48] + 8, RPL 3"
        CHECK64 [U_RSP], LM_STACK3 - 0x28, "sysretq: RSP unchanged"
        ; SDM SYSRET: RFLAGS <- (R11 & 3C7FD7H) | 2 (RF and reserved bits 3, 5 cleared)
        CHECK64 [U_RFL], 0x3042, "sysretq: RFLAGS from R11 (RF, reserved bits cleared)"

        ; ------------------------------------------------ SYSRET to compatibility mode
        mov qword [SC_MODE], 1
        mov qword [U_CS], 0
        mov qword [SC_R11OUT], 0x3002
        RING3_BEGIN
        syscall
        ud2                             ; not reached: SYSRETD goes to sc_compat
        bits 32
sc_compat:
        mov ax, LM_SEL_UDATA | 3        ; DS was nulled on the way to ring 3
        mov ds, ax
        mov eax, cs
        mov [U_CS], eax
        mov eax, ss
        mov [U_SS], eax
        mov eax, 0x5
        db 0x48                         ; DEC EAX: really in compatibility mode
        nop
        mov [U_RAX], eax
        RING3_END
        bits 64
        CHECK64 [U_CS], LM_SEL_UCODE32 | 3, "sysretd: CS = STAR[63:48], compatibility mode"
        CHECK64 [U_SS], LM_SEL_UDATA | 3, "sysretd: SS = STAR[63:48] + 8"
        CHECK64 [U_RAX], 4, "sysretd: executing 32-bit code"
        mov rbx, sc_compat_rcx
        CHECK64 [SC_RCX], rbx, "syscall (2nd): RCX"
        ; SYSRET in ring 3: #GP(0)
        TRY
        RING3_BEGIN
        o64 sysret
        RING3_END
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "sysret at CPL 3: #GP"
        CHECK64 [LM_EXC_ERR], 0, "sysret at CPL 3: error code 0"

        ; ------------------------------------------------ FS / GS base
        mov qword [0x20000 + 0x10], 0xF5F5
        mov qword [0x40000 + 0x10], 0x6565
        WRMSR64 MSR_FSBASE, 0x20000
        WRMSR64 MSR_GSBASE, 0x40000
        mov rax, [fs:0x10]
        CHECK64 rax, 0xF5F5, "FS base from IA32_FS_BASE"
        mov rax, [gs:0x10]
        CHECK64 rax, 0x6565, "GS base from IA32_GS_BASE"
        WRMSR64 MSR_FSBASE, 0xFFFFFFFF80000000
        mov rbx, 0x80020010
        mov rax, [fs:rbx]               ; base + offset wraps modulo 2^64
        CHECK64 rax, 0xF5F5, "FS base + offset wraps at 2^64"
        ; loading FS with a selector takes the base from the descriptor (upper 32 bits zero)
        mov dword [LM_GDT + SEL_FSDESC], 0x5000FFFF
        mov dword [LM_GDT + SEL_FSDESC + 4], 0x00CF9234
        mov ax, SEL_FSDESC
        mov fs, ax
        RDMSR64 MSR_FSBASE
        CHECK64 rax, 0x345000, "mov fs, sel: IA32_FS_BASE = descriptor base"

        ; ------------------------------------------------ SWAPGS
        WRMSR64 MSR_KGSBASE, 0x20000
        swapgs
        RDMSR64 MSR_GSBASE
        CHECK64 rax, 0x20000, "swapgs: GS base <- KERNEL_GS_BASE"
        RDMSR64 MSR_KGSBASE
        CHECK64 rax, 0x40000, "swapgs: KERNEL_GS_BASE <- old GS base"
        mov rax, [gs:0x10]
        CHECK64 rax, 0xF5F5, "swapgs: GS-relative access uses the new base"
        swapgs
        mov rax, [gs:0x10]
        CHECK64 rax, 0x6565, "swapgs twice: original base"
        TRY
        RING3_BEGIN
        swapgs
        RING3_END
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "swapgs at CPL 3: #GP"
        CHECK64 [LM_EXC_ERR], 0, "swapgs at CPL 3: error code 0"
        ; compatibility mode, CPL 0
        mov qword [LM_EXC_VEC], -1
        mov [LM_CATCH_RSP], rsp
        mov qword [LM_CATCH_RIP], swapgs_compat_done
        push LM_SEL_KCODE32
        push swapgs_compat
        retfq
        bits 32
swapgs_compat:
        db 0x0F, 0x01, 0xF8             ; SWAPGS (nasm refuses it in 32-bit code)
        jmp swapgs_compat
        bits 64
swapgs_compat_done:
        CHECK64 [LM_EXC_VEC], 6, "swapgs in compatibility mode: #UD"
        CHECK64 [LM_EXC_CS], LM_SEL_KCODE32, "swapgs in compatibility mode: frame CS"

        ; ------------------------------------------------ call gates
        mov rdi, LM_GDT + SEL_GATE3
        mov rax, sc_gate
        mov dl, 0xEC                    ; P, DPL 3, 64-bit call gate
        call make_gate
        mov rdi, LM_GDT + SEL_GATE0
        mov dl, 0x8C                    ; P, DPL 0
        call make_gate
        mov rdi, LM_GDT + SEL_GATEBAD
        mov dl, 0xEC
        call make_gate
        mov byte [LM_GDT + SEL_GATEBAD + 13], 0x0C   ; upper-half type must be 0
        mov qword [CG_COUNT], 0
        RING3_BEGIN
        mov rsp, LM_STACK3 - 0x48
        mov rbx, 0xB0B0
        call far dword [rel gate3_ptr]        ; m16:32 operand; the offset is ignored
cg_ret:
        mov [U_RSP], rsp
        mov eax, cs
        mov [U_CS], rax
        mov eax, ss
        mov [U_SS], rax
        RING3_END
        CHECK64 [CG_COUNT], 1, "call gate from ring 3: handler ran"
        CHECK64 [CG_RSP], LM_RSP0 - 32, "call gate: stack from TSS.RSP0, 4 qwords"
        CHECK64 [CG_SS], 0, "call gate ring 3 -> 0: SS = NULL"
        mov rbx, cg_ret
        CHECK64 [CG_FRAME], rbx, "call gate frame[0] = return RIP"
        CHECK64 [CG_FRAME + 8], LM_SEL_UCODE64 | 3, "call gate frame[1] = CS"
        CHECK64 [CG_FRAME + 16], LM_STACK3 - 0x48, "call gate frame[2] = RSP"
        CHECK64 [CG_FRAME + 24], LM_SEL_UDATA | 3, "call gate frame[3] = SS"
        CHECK64 [U_CS], LM_SEL_UCODE64 | 3, "retfq to ring 3: CS"
        CHECK64 [U_SS], LM_SEL_UDATA | 3, "retfq to ring 3: SS"
        CHECK64 [U_RSP], LM_STACK3 - 0x48, "retfq to ring 3: RSP"
        ; same privilege: CPL 0 through the DPL 0 gate, only CS:RIP pushed
        mov r12, rsp
        call far dword [rel gate0_ptr]
cg_ret0:
        CHECK64 [CG_COUNT], 2, "call gate at CPL 0: handler ran"
        lea rcx, [r12 - 16]
        CHECK64 [CG_RSP], rcx, "call gate at CPL 0: no stack switch, 2 qwords"
        mov rbx, cg_ret0
        CHECK64 [CG_FRAME], rbx, "call gate at CPL 0: frame[0] = RIP"
        CHECK64 [CG_FRAME + 8], LM_SEL_KCODE64, "call gate at CPL 0: frame[1] = CS"
        CHECK64 [CG_SS], LM_SEL_KDATA, "call gate at CPL 0: SS unchanged"
        ; DPL 0 gate from ring 3: #GP(gate selector)
        TRY
        RING3_BEGIN
        call far dword [rel gate0_ptr_r3]
        RING3_END
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "call gate DPL 0 from ring 3: #GP"
        CHECK64 [LM_EXC_ERR], SEL_GATE0, "call gate DPL 0 from ring 3: error code = gate selector"
        CHECK64 [CG_COUNT], 2, "call gate DPL 0 from ring 3: handler not run"
        TRY
        RING3_BEGIN
        call far dword [rel gatebad_ptr]
        RING3_END
        ENDTRY
        CHECK64 [LM_EXC_VEC], 13, "call gate with a bad upper half: #GP"
        CHECK64 [LM_EXC_ERR], SEL_GATEBAD, "call gate bad upper half: error code = gate selector"

        call finish64

sc_compat_rcx equ sc_compat - 2         ; RCX = the ud2 (0F 0B) right after the syscall

; sc_handler: LSTAR target. Records the entry state, then SYSRET according to SC_MODE.
sc_handler:
        mov [SC_RCX], rcx
        mov [SC_R11], r11
        mov [SC_RSP], rsp
        mov rsp, SC_KSTACK
        pushfq
        pop qword [SC_RFL]
        mov eax, cs
        mov [SC_CS], rax
        mov eax, ss
        mov [SC_SS], rax
        mov r11, [SC_R11OUT]
        cmp qword [SC_MODE], 1
        je .compat
        mov rsp, [SC_RSP]
        o64 sysret
.compat:
        mov ecx, sc_compat
        mov rsp, [SC_RSP]
        sysret                          ; no REX.W: to compatibility mode, EIP = ECX

; sc_gate: call-gate target. Records RSP, SS and the 4 qwords above RSP, then RETFQ.
sc_gate:
        mov [CG_RSP], rsp
        push rax
        mov eax, ss
        mov [CG_SS], rax
        mov rax, [rsp + 8]
        mov [CG_FRAME], rax
        mov rax, [rsp + 16]
        mov [CG_FRAME + 8], rax
        mov rax, [rsp + 24]
        mov [CG_FRAME + 16], rax
        mov rax, [rsp + 32]
        mov [CG_FRAME + 24], rax
        inc qword [CG_COUNT]
        pop rax
        retfq

; make_gate: 16-byte call gate at RDI to RAX (CS = kernel 64-bit code), attribute byte DL.
make_gate:
        mov [rdi], ax
        mov word [rdi + 2], LM_SEL_KCODE64
        mov byte [rdi + 4], 0
        mov [rdi + 5], dl
        push rax
        shr rax, 16
        mov [rdi + 6], ax
        shr rax, 16
        mov [rdi + 8], eax
        mov dword [rdi + 12], 0
        pop rax
        ret

gate3_ptr:    dd 0x11111111
              dw SEL_GATE3 | 3
gate0_ptr:    dd 0
              dw SEL_GATE0
gate0_ptr_r3: dd 0
              dw SEL_GATE0 | 3
gatebad_ptr:  dd 0
              dw SEL_GATEBAD | 3

%include "reset.inc"
