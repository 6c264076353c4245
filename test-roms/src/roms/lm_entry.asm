; lm_entry: the switch into IA-32e mode, step by step, and compatibility mode.
;
; Covers: EFER.LME set with paging off leaves LMA = 0; enabling CR0.PG with PAE + LME activates
; IA-32e mode (EFER.LMA = 1) while still running the 32-bit code segment (compatibility mode, 0x48 is
; DEC EAX there); the far jump to a L=1 code segment (CS.L via LAR, 0x48 becomes REX.W, 8-byte
; pushes, RIP-relative addressing); DS/ES/SS bases and limits ignored in 64-bit mode but the base
; honoured in compatibility mode; a far return (RETFQ) into a L=0 code segment (compatibility mode:
; 4-byte pushes, 32-bit address wrap) and a 32-bit far return back to 64-bit mode; far calls (m16:32
; into compatibility mode, m16:64 with REX.W to a 64-bit segment); an exception raised in
; compatibility mode delivered through the 64-bit IDT (frame CS/RIP); finally leaving IA-32e mode
; (CR0.PG = 0 from compatibility mode clears EFER.LMA) and finishing in legacy protected mode.
; Not checked (QEMU 7.2 TCG differs from the SDM, see the comment in the code): #GP(0) for clearing
; CR4.PAE or CR0.PG in 64-bit mode and for changing EFER.LME with CR0.PG = 1; the accessed bit of CS
; after a far JMP; an explicit ES: prefix being ignored in 64-bit mode.
; SDM Vol. 3A 9.8.5 (initializing / leaving IA-32e mode), 2.2.1 / 2.5 (EFER, CR0, CR4), 3.4.5
; (code-segment L/D bits), 5.2.1 / 3.2.4 (compatibility mode, segmentation in 64-bit mode), 6.14
; (64-bit IDT); Vol. 1 3.4.1.1 (upper register halves after compatibility mode); Vol. 2 CALL/RET far.
; QEMU: default CPU (qemu64).
%include "common.inc"
%include "longmode.inc"

SEL_DBASE equ LM_SEL_FREE            ; ring-0 data segment with base 0x20000
SEL_DLIM  equ LM_SEL_FREE + 8        ; ring-0 data segment, base 0, limit 0xF
EFER      equ 0xC0000080

rom_start:
        INIT16
        mov ecx, EFER
        rdmsr
        CHECK16 eax, 0, "real mode: EFER = 0"
        mov ebx, 0                     ; (no 64-bit target yet: we enter step by step)
        call lm_prepare16
        mov eax, cr0
        or al, 1
        mov cr0, eax
        jmp dword LM_SEL_KCODE32:pm32

        bits 32
pm32:
        mov ax, LM_SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov fs, ax
        mov gs, ax
        mov esp, LM_STACK
        ; extra descriptor: data, base 0x20000
        mov dword [LM_GDT + SEL_DBASE], 0x0000FFFF
        mov dword [LM_GDT + SEL_DBASE + 4], 0x00CF9202
        mov dword [LM_GDT + SEL_DLIM], 0x0000000F
        mov dword [LM_GDT + SEL_DLIM + 4], 0x00409200
        mov dword [0x20000], 0x11111111
        mov dword [0x20004], 0x22222222
        mov dword [0x20000 + 0x40], 0x33333333
        mov dword [0x40], 0x44444444
        call lm_build_pt32
        mov eax, cr4
        or eax, 1 << 5
        mov cr4, eax
        mov eax, LM_PML4
        mov cr3, eax
        mov ecx, EFER
        rdmsr
        or eax, 1 << 8
        wrmsr
        rdmsr
        CHECK32 eax, 0x100, "EFER.LME=1, LMA=0 before paging"
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        ; IA-32e mode is active now, but CS is still the L=0 segment: compatibility mode.
        mov ecx, EFER
        rdmsr
        CHECK32 eax, 0x500, "EFER.LMA=1 after CR0.PG=1"
        mov eax, 5
        db 0x48                        ; DEC EAX in compatibility mode (REX only in 64-bit mode)
        nop
        CHECK32 eax, 4, "compat (entry): 0x48 is DEC EAX"
        mov eax, cr0
        and eax, 0x80000001
        CHECK32 eax, 0x80000001, "CR0.PG|PE"
        jmp LM_SEL_KCODE64:long64

        bits 64
long64:
        mov ax, LM_SEL_KDATA
        mov ds, ax
        mov es, ax
        mov ss, ax
        mov rsp, LM_STACK
        call lm_setup64
        mov eax, cs
        CHECK64 rax, LM_SEL_KCODE64, "64-bit: CS selector"
        mov eax, LM_SEL_KCODE64
        lar eax, eax
        and eax, ~0x100                ; QEMU does not set the accessed bit on a far JMP (SDM 3.4.5.1 says the CPU sets it)
        CHECK64 rax, 0x00A09A00, "64-bit: LAR CS (L=1, D=0, P, DPL 0, code)"
        mov ecx, EFER
        rdmsr
        CHECK64 rax, 0x500, "64-bit: EFER = LME|LMA"
        ; 0x48 is REX.W now
        xor eax, eax
        db 0x48
        dec eax                        ; REX.W + DEC EAX = DEC RAX (0 - 1 in 64 bits)
        CHECK64 rax, -1, "64-bit: 0x48 is REX.W"
        mov rcx, 0x123456789ABCDEF0
        mov rax, rcx
        shr rax, 32
        CHECK64 rax, 0x12345678, "64-bit: 64-bit registers"
        ; 64-bit stack: push is 8 bytes
        mov rbx, rsp
        push rax
        sub rbx, rsp
        pop rax
        CHECK64 rbx, 8, "64-bit: push is 8 bytes"
        ; RIP-relative addressing
        lea rax, [rel here]
here:   CHECK64 rax, here, "64-bit: RIP-relative LEA"
        ; data-segment base ignored in 64-bit mode (DS, ES, SS)
        mov ax, SEL_DBASE
        mov ds, ax
        mov eax, [0x40]
        CHECK64 rax, 0x44444444, "64-bit: DS base ignored"
        ; ES base ignored: string store through ES:RDI. (An explicit ES: prefix is also specified to be
        ; ignored in 64-bit mode, SDM Vol. 1 3.3.7.1 / Vol. 3A 3.2.4, but QEMU 7.2 TCG adds the ES base
        ; for an explicit 26h prefix, so that form is not checked here.)
        mov ax, SEL_DBASE
        mov es, ax
        mov dword [LM_USER + 8], 0
        mov dword [0x20000 + LM_USER + 8], 0
        mov edi, LM_USER + 8
        mov eax, 0x5A5A5A5A
        stosd
        mov eax, [LM_USER + 8]
        CHECK64 rax, 0x5A5A5A5A, "64-bit: ES base ignored (STOSD)"
        mov ax, SEL_DBASE
        mov ss, ax
        push qword 0x77
        pop rax
        mov ax, LM_SEL_KDATA
        mov ss, ax
        mov rax, [rsp - 8]
        CHECK64 rax, 0x77, "64-bit: SS base ignored"
        ; ... and so is the limit (SEL_DLIM: limit 0xF, byte granular)
        mov ax, SEL_DLIM
        mov ds, ax
        mov eax, [0x40]
        CHECK64 rax, 0x44444444, "64-bit: DS limit ignored"
        mov ax, LM_SEL_KDATA
        mov ds, ax
        mov es, ax
        ; (Not checked, QEMU 7.2 TCG differs from the SDM: MOV CR4 clearing PAE with LMA = 1, MOV CR0
        ; clearing PG in 64-bit mode and WRMSR changing EFER.LME with CR0.PG = 1 all raise #GP(0) per
        ; SDM Vol. 2 MOV CR / WRMSR and Vol. 3A 9.8.5; QEMU performs them.)

        ; ---- far return (REX.W RETF) into a compatibility-mode segment
        mov [LM_USER], rsp
        push LM_SEL_KCODE32
        push compat1
        retfq
        bits 32
compat1:
        mov ecx, EFER
        rdmsr
        CHECK32 eax, 0x500, "compat: EFER.LMA still 1"
        mov eax, cs
        CHECK32 eax, LM_SEL_KCODE32, "compat: CS = L=0 segment"
        mov eax, 7
        db 0x48                        ; DEC EAX
        nop
        CHECK32 eax, 6, "compat: 0x48 is DEC EAX"
        mov ebx, esp
        push eax
        sub ebx, esp
        pop eax
        CHECK32 ebx, 4, "compat: push is 4 bytes"
        ; data-segment base honoured in compatibility mode
        mov ax, SEL_DBASE
        mov ds, ax
        mov eax, [0x40]
        mov bx, LM_SEL_KDATA
        mov ds, bx
        CHECK32 eax, 0x33333333, "compat: DS base honoured"
        ; 32-bit effective addresses wrap at 4 GiB
        mov ebx, 0xFFFFFFF0
        mov eax, [ebx + 0x20000 + 0x10]
        CHECK32 eax, 0x11111111, "compat: 32-bit address wraps"
        ; exception in compatibility mode goes through the 64-bit IDT (resume in 64-bit code)
        mov dword [LM_EXC_VEC], -1
        mov dword [LM_EXC_VEC + 4], -1
        mov [LM_CATCH_RSP], esp
        mov dword [LM_CATCH_RSP + 4], 0
        mov dword [LM_CATCH_RIP], compat_ud_resume
        mov dword [LM_CATCH_RIP + 4], 0
        ud2
        bits 64
compat_ud_resume:
        CHECK64 [LM_EXC_VEC], 6, "compat: #UD delivered via 64-bit IDT"
        CHECK64 [LM_EXC_CS], LM_SEL_KCODE32, "compat: frame CS = compat segment"
        mov rbx, compat_ud_rip
        CHECK64 [LM_EXC_RIP], rbx, "compat: frame RIP"
        jmp compat_ud_done
compat_ud_rip equ compat_ud_resume - 2     ; the ud2 sits right before the resume label
compat_ud_done:
        ; back into compatibility mode once more, and return with a 32-bit far return
        push LM_SEL_KCODE32
        push compat2
        retfq
        bits 32
compat2:
        push dword LM_SEL_KCODE64
        push dword back64
        retf                           ; 32-bit far return to the L=1 segment
        bits 64
back64:
        mov eax, cs
        CHECK64 rax, LM_SEL_KCODE64, "far return from compat to 64-bit"
        mov rbx, rsp
        mov rcx, [LM_USER]
        CHECK64 rbx, rcx, "stack balanced after compat round trip"
        ; far call (m16:32) from 64-bit into compatibility mode, 32-bit RETF back
        mov rax, 0xFFFFFFFF00000000
        mov rbx, rax
        call far dword [rel farptr]
        mov eax, eax                   ; upper halves are undefined after compatibility mode (SDM Vol. 1 3.4.1.1)
        CHECK64 rax, 0x12345678, "far call (m16:32) into compat, 32-bit RETF back"
        mov rbx, rsp
        mov rcx, [LM_USER]
        CHECK64 rbx, rcx, "stack balanced after far call"
        ; far call with REX.W (m16:64) and RETFQ? Only 64-bit code here:
        call far qword [rel farptr64]
        CHECK64 rax, 0x64, "REX.W far call to 64-bit segment, RETFQ back"

        ; ---- leave IA-32e mode: to compatibility mode, CR0.PG = 0, LMA drops to 0
        push LM_SEL_KCODE32
        push leave32
        retfq
        bits 32
leave32:
        mov eax, cr0
        and eax, 0x7FFFFFFF
        mov cr0, eax
        mov ecx, EFER
        rdmsr
        CHECK32 eax, 0x100, "CR0.PG=0 in compat mode: LMA=0 (legacy protected mode)"
        mov eax, 9
        db 0x48                        ; still DEC EAX
        nop
        CHECK32 eax, 8, "legacy protected mode after leaving IA-32e"
        call finish32

        bits 32
compat_call:
        mov eax, 0x12345678
        retf
        bits 64
far64:
        mov eax, 0x64
        retfq

farptr:   dd compat_call
          dw LM_SEL_KCODE32
farptr64: dq far64
          dw LM_SEL_KCODE64

%include "reset.inc"
