; v86_vme: virtual-8086 mode extensions (CR4.VME) and protected-mode virtual interrupts (CR4.PVI).
;
; Covers (SDM Vol. 3A 20.3.3 and 20.4, table 20-2; Vol. 2 CLI, STI, PUSHF, POPF, IRET, INT n):
;  * CPUID.1:EDX.VME; CR4.VME and CR4.PVI can be set.
;  * v86 with IOPL = 0 and CR4.VME = 1: STI and CLI set and clear VIF without #GP; the 16-bit PUSHF
;    image carries VIF as IF and IOPL = 3; a 16-bit POPF loads IF into VIF; INT n whose bit in the TSS's
;    interrupt redirection bitmap is clear goes to the 8086 handler through the v86 IVT (pushed FLAGS
;    carry VIF as IF, VIF and TF clear inside), and its 16-bit IRET restores VIF from the popped IF;
;    a POPF with TF set, a 32-bit PUSHFD, and INT n whose redirection bit is set are still #GP(0); the
;    monitor sees VIF in the pushed EFLAGS.
;  * With VIP set: STI and a POPF that would set IF are #GP(0); CLI is not.
;  * CPL 3 with IOPL = 0 and CR4.PVI = 1: CLI and STI clear and set VIF (PUSHFD shows it); with PVI
;    clear, CLI is #GP(0).
;
; QEMU quirk (-DQEMU_QUIRKS runs only the last check): QEMU 7.2 TCG implements neither VME nor PVI
; (CPUID.1:EDX.VME is clear under TCG).
%include "common.inc"
%include "sys.inc"

MON_COUNT  equ 0x9000
MON_EFL    equ 0x9004
MON_RESUME equ 0x9010
MON_SAVESP equ 0x9014
MON_LOG    equ 0x9020               ; opcode byte of each trapped instruction
VREC       equ 0x9100               ; v86 records (0000:9100)
FL_VIF     equ 1 << 19
FL_VIP     equ 1 << 20

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt, pm_main
xgdt:

; ---------------------------------------------------------------- v86 programs (16-bit, CS=F000)
        bits 16
v86_vme:                                        ; IOPL = 0, VIF = 0 at entry
        xor ax, ax
        mov ds, ax
        sti                                     ; VIF := 1
        pushf
        pop word [VREC + 0]
        cli                                     ; VIF := 0
        pushf
        pop word [VREC + 2]
        push word 0x0200
        popf                                    ; VIF := 1
        pushf
        pop word [VREC + 4]
        int 0x40                                ; redirected to F000:v86_int40
        pushf
        pop word [VREC + 10]
        push word 0x0100
        popf                                    ; TF: #GP
        add sp, 2
        pushfd                                  ; 32-bit: #GP
        int 0x21                                ; redirection bit set: #GP
        int 0x20                                ; exit

v86_int40:
        mov bp, sp
        mov ax, [bp + 4]                        ; pushed FLAGS
        mov [VREC + 6], ax
        pushf
        pop word [VREC + 8]                     ; inside: VIF clear
        iret

v86_vip:                                        ; IOPL = 0, VIP = 1, VIF = 0 at entry
        sti                                     ; #GP (VIP)
        push word 0x0200
        popf                                    ; #GP (VIP and IF)
        add sp, 2
        cli                                     ; fine
        int 0x20

; ---------------------------------------------------------------- 32-bit monitor
        bits 32
; #GP handler: [esp] err, eip, cs, eflags, esp, ss, es, ds, fs, gs. Skips the trapped instruction.
vme_monitor:
        push eax
        push ebx
        mov ax, SEL_DATA0
        mov ds, ax
        mov es, ax
        mov eax, [esp + 20]
        mov [MON_EFL], eax
        test eax, FL_VM
        jz .not_v86
        movzx ebx, word [esp + 16]
        shl ebx, 4
        add ebx, [esp + 12]                     ; linear CS*16 + IP
        movzx eax, byte [ebx]
        push ebx
        mov ebx, [MON_COUNT]
        mov [MON_LOG + ebx], al
        pop ebx
        inc dword [MON_COUNT]
        cmp al, 0xCD
        jne .one
        cmp byte [ebx + 1], 0x20
        je .exit
        add dword [esp + 12], 2                 ; INT n
        jmp .done
.one:   cmp al, 0x66
        jne .single
        add dword [esp + 12], 2                 ; 66 9C
        jmp .done
.single:
        inc dword [esp + 12]
.done:  pop ebx
        pop eax
        add esp, 4
        iretd
.exit:  mov ax, SEL_DATA0
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov esp, [MON_SAVESP]
        jmp [MON_RESUME]
.not_v86:
        pop ebx
        pop eax
        jmp pm_stubs + 13 * 16

; V86RUN prog, eflags: run a v86 program until it executes INT 20h
%macro V86RUN 2
        mov dword [MON_COUNT], 0
        mov dword [MON_LOG], 0
        mov dword [MON_LOG + 4], 0
        mov dword [MON_RESUME], %%back
        mov [MON_SAVESP], esp
        push dword 0                            ; GS
        push dword 0                            ; FS
        push dword 0                            ; DS
        push dword 0                            ; ES
        push dword 0                            ; SS
        push dword 0x7000                       ; SP
        push dword FL_VM | (%2) | 2
        push dword 0xF000                       ; CS
        push dword R(%1)                        ; IP
        iretd
%%back:
%endmacro

; CHECKBITS value, mask, expected, "name"
%macro CHECKBITS 4
        mov eax, %1
        and eax, %2
        CHECK32 eax, %3, %4
%endmacro

r3_cli_sti:                                     ; (DS is null in ring 3: SS-relative stores)
        cli
        pushfd
        pop dword [ss:VREC + 0x20]
        sti
        pushfd
        pop dword [ss:VREC + 0x24]
        int VEC_EXIT
r3_cli:
        cli
        int VEC_EXIT

pm_main:
%ifndef QEMU_QUIRKS
        mov eax, 1
        cpuid
        bt edx, 1
        setc al
        movzx eax, al
        CHECK32 eax, 1, "CPUID.1:EDX.VME"
        SET_GATE 13, vme_monitor, SEL_CODE0, 0x8E00
        mov word [0x40 * 4], R(v86_int40)       ; v86 IVT[0x40] = F000:v86_int40
        mov word [0x40 * 4 + 2], 0xF000
        ; Interrupt redirection bitmap: the 32 bytes below the I/O bitmap (TSS + 0x48): vectors 0x20
        ; and 0x21 go to the protected-mode side (bit set), everything else is redirected.
        mov byte [TSS_ADDR + TSS_IOMAP - 32 + 4], 0x03
        mov eax, cr4
        or eax, 1                               ; VME
        mov cr4, eax
        mov eax, cr4
        CHECKBITS eax, 1, 1, "CR4.VME set"

        ; ------------------------------------------------ VIF through STI/CLI/PUSHF/POPF/INT/IRET
        V86RUN v86_vme, 0
        CHECKBITS [VREC + 0], 0x3200, 0x3200, "VME: STI sets VIF (PUSHF image: IF = VIF, IOPL = 3)"
        CHECKBITS [VREC + 2], 0x3200, 0x3000, "VME: CLI clears VIF"
        CHECKBITS [VREC + 4], 0x0200, 0x0200, "VME: POPF loads IF into VIF"
        CHECKBITS [VREC + 6], 0x3200, 0x3200, "VME: redirected INT pushes IF = VIF, IOPL = 3"
        CHECKBITS [VREC + 8], 0x0200, 0, "VME: VIF clear in the 8086 handler"
        CHECKBITS [VREC + 10], 0x0200, 0x0200, "VME: IRET restores VIF"
        CHECK32 [MON_COUNT], 4, "VME: POPF with TF, PUSHFD, INT 21h and the exit trap"
        CHECKBITS [MON_LOG], 0xFFFFFFFF, 0xCDCD669D, "VME: trapped POPF, PUSHFD, INT 21h, INT 20h"
        CHECKBITS [MON_EFL], FL_VIF | FL_VM, FL_VIF | FL_VM, "VME: the monitor sees VIF"

        ; ------------------------------------------------ VIP
        V86RUN v86_vip, FL_VIP
        CHECK32 [MON_COUNT], 3, "VIP: STI and POPF of IF trap, CLI does not"
        CHECKBITS [MON_LOG], 0xFFFFFF, 0xCD9DFB, "VIP: trapped STI, POPF, INT 20h"

        ; ------------------------------------------------ PVI
        mov eax, cr4
        and eax, ~1
        or eax, 2                               ; PVI
        mov cr4, eax
        TRY .p1
        RING3 r3_cli_sti, 2
.p1:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, "PVI: CLI and STI at CPL 3, IOPL 0 do not fault"
        CHECKBITS [VREC + 0x20], FL_VIF | FL_IF, 0, "PVI: CLI clears VIF"
        CHECKBITS [VREC + 0x24], FL_VIF | FL_IF, FL_VIF, "PVI: STI sets VIF, not IF"
        mov eax, cr4
        and eax, ~2
        mov cr4, eax
%endif
        TRY .p2
        RING3 r3_cli, 2
.p2:    ENDTRY
        CHECK32 [EXC_VEC], 13, "no PVI: CLI at CPL 3, IOPL 0 is #GP"
        jmp finish32

%include "reset.inc"
