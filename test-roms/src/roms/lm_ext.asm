; lm_ext: long-mode features that QEMU's default CPU (qemu64) does not have.
; qemu-args: -cpu max,vendor=GenuineIntel
;
; RUN WITH: -cpu max,vendor=GenuineIntel
;   -cpu max for BMI1/BMI2/POPCNT/LZCNT/MOVBE/ADX/RDTSCP/pdpe1gb/SMEP/SMAP/FSGSBASE; the Intel vendor
;   because QEMU (like AMD CPUs) makes SYSENTER/SYSEXIT #UD in 64-bit mode for a non-Intel vendor,
;   while the SDM defines them there.
;
; Covers: CPUID bits for the above; ANDN/BEXTR/BLSI/BLSMSK/BLSR/TZCNT (BMI1), BZHI/PDEP/PEXT/RORX/
; SARX/SHLX/SHRX/MULX (BMI2), POPCNT, LZCNT (incl. zero inputs and CF/ZF), MOVBE load/store,
; ADCX/ADOX (each uses and sets only CF resp. OF); RDTSCP (ECX = IA32_TSC_AUX, zero-extended
; results, TSC monotonic); 1 GiB pages (translation, dirty bit in the PDPTE, reserved bits 29:13);
; SMEP (supervisor fetch from a user page: #PF I/D|P) and SMAP (supervisor data access to a user
; page: #PF, allowed with STAC, faulting again after CLAC); RD/WR FS/GS BASE (#UD while CR4.FSGSBASE
; = 0, then from ring 3); SYSENTER/SYSEXIT in IA-32e mode: SYSENTER from 64-bit ring 3 (CS/SS from
; IA32_SYSENTER_CS, RSP/RIP from SYSENTER_ESP/EIP, IF cleared), SYSEXIT with REX.W to 64-bit
; ring 3 (CS = SYSENTER_CS+32, SS = +40, RIP = RDX, RSP = RCX) and without REX.W to compatibility
; mode (CS = +16, SS = +24).
; SDM Vol. 2 instruction pages (ANDN ... SHRX, POPCNT, LZCNT, TZCNT, MOVBE, ADCX, ADOX, RDTSCP,
; RDFSBASE, WRFSBASE, SYSENTER, SYSEXIT, STAC, CLAC); Vol. 3A 4.5 (1-GByte pages, Table 4-16),
; 4.6.1 (SMEP, SMAP), 4.7, 5.8.7 (SYSENTER/SYSEXIT in IA-32e mode).
%include "common.inc"
%include "longmode.inc"
        cpu any                         ; common.inc selects x64; BMI/ADX/... need the full set

OSZAPC equ 0x8D5
F_CF equ 0x001
F_ZF equ 0x040
F_SF equ 0x080
F_OF equ 0x800

LB      equ 0x0000008000000000
PDPT_T  equ 0x30000
PD_T    equ 0x31000
PT_T    equ 0x32000
PHYS    equ 0x40000
BUF     equ 0x50000

V        equ LM_USER + 0x100
SE_RSP   equ V + 0x00
SE_CS    equ V + 0x08
SE_SS    equ V + 0x10
SE_RFL   equ V + 0x18
SE_MODE  equ V + 0x20
U_CS     equ V + 0x28
U_SS     equ V + 0x30
U_RSP    equ V + 0x38
U_RAX    equ V + 0x40
SE_STACK equ LM_IST3_TOP - 0x100

%macro CHECKF 3
        pushfq
        push rbx
        mov rbx, [rsp + 8]
        and rbx, %2
        CHECK64 rbx, %1, %3
        pop rbx
        popfq
%endmacro

; CPUIDBIT leaf, reg, bit, "name"
%macro CPUIDBIT 4
        mov eax, %1
        xor ecx, ecx
        cpuid
        bt %2, %3
        setc al
        movzx eax, al
        CHECK64 rax, 1, %4
%endmacro

%macro WRMSR64 2
        mov ecx, %1
        mov rax, %2
        mov rdx, rax
        shr rdx, 32
        wrmsr
%endmacro

rom_start:
        INIT16
        mov al, 0xFF                    ; mask the PICs (IF=1 is used in ring 3 below)
        out 0x21, al
        out 0xA1, al
        LM_ENTER main64

        bits 64
main64:
        CPUIDBIT 7, ebx, 3, "CPUID: BMI1"
        CPUIDBIT 7, ebx, 8, "CPUID: BMI2"
        CPUIDBIT 7, ebx, 19, "CPUID: ADX"
        CPUIDBIT 7, ebx, 7, "CPUID: SMEP"
        CPUIDBIT 7, ebx, 20, "CPUID: SMAP"
        CPUIDBIT 7, ebx, 0, "CPUID: FSGSBASE"
        CPUIDBIT 1, ecx, 23, "CPUID: POPCNT"
        CPUIDBIT 1, ecx, 22, "CPUID: MOVBE"
        CPUIDBIT 0x80000001, ecx, 5, "CPUID: LZCNT (ABM)"
        CPUIDBIT 0x80000001, edx, 27, "CPUID: RDTSCP"
        CPUIDBIT 0x80000001, edx, 26, "CPUID: 1 GiB pages"
        CPUIDBIT 1, edx, 11, "CPUID: SEP (SYSENTER)"

        ; ------------------------------------------------ BMI1
        mov rbx, 0xF0F0
        mov rcx, 0xFFFF
        andn rax, rbx, rcx
        CHECK64 rax, 0x0F0F, "andn"
        mov rbx, -1
        mov rcx, -1
        andn rax, rbx, rcx
        CHECKF F_ZF, OSZAPC & ~0x14, "andn zero: ZF, CF=OF=0"
        mov rbx, 0x123456789ABCDEF0
        mov ecx, (16 << 8) | 8
        bextr rax, rbx, rcx
        CHECK64 rax, 0xBCDE, "bextr start 8 len 16"
        mov ecx, (0x40 << 8) | 60
        bextr rax, rbx, rcx
        CHECK64 rax, 0x1, "bextr past bit 63"
        mov rbx, 0x28
        blsi rax, rbx
        CHECK64 rax, 0x8, "blsi"
        ; (SDM BLSI: CF = 1 when the source is non-zero. QEMU 7.2 TCG computes it like BLSR, so the
        ; BLSI CF is not checked; BLSMSK/BLSR CF = (source == 0) is.)
        blsmsk rax, rbx
        CHECK64 rax, 0xF, "blsmsk"
        blsr rax, rbx
        CHECK64 rax, 0x20, "blsr"
        CHECKF 0, F_CF|F_ZF, "blsr nonzero source: CF=0"
        xor ebx, ebx
        blsmsk rax, rbx
        CHECK64 rax, -1, "blsmsk 0 = all ones"
        CHECKF F_CF|F_SF, F_CF|F_ZF|F_SF, "blsmsk 0: CF, SF"
        mov rbx, 0x100
        tzcnt rax, rbx
        CHECK64 rax, 8, "tzcnt"
        xor ebx, ebx
        tzcnt rax, rbx
        CHECK64 rax, 64, "tzcnt 0 = 64"
        CHECKF F_CF, F_CF|F_ZF, "tzcnt 0: CF"
        mov ebx, 0
        tzcnt eax, ebx
        CHECK64 rax, 32, "tzcnt r32 0 = 32"

        ; ------------------------------------------------ BMI2
        mov rbx, -1
        mov ecx, 12
        bzhi rax, rbx, rcx
        CHECK64 rax, 0xFFF, "bzhi 12"
        mov rbx, 0b1011
        mov rcx, 0xF0F0
        pdep rax, rbx, rcx
        CHECK64 rax, 0xB0, "pdep"
        mov rbx, 0x12345678
        mov rcx, 0xFF00FF00
        pext rax, rbx, rcx
        CHECK64 rax, 0x1256, "pext"
        mov rbx, 0x0123456789ABCDEF
        stc
        rorx rax, rbx, 8
        CHECK64 rax, 0xEF0123456789ABCD, "rorx 8"
        CHECKF F_CF, F_CF, "rorx: flags untouched"
        mov rbx, -256
        mov ecx, 68
        sarx rax, rbx, rcx
        CHECK64 rax, -16, "sarx count 68 -> 4"
        mov ebx, 1
        mov ecx, 65
        shlx rax, rbx, rcx
        CHECK64 rax, 2, "shlx count 65 -> 1"
        mov rbx, 0x8000000000000000
        mov ecx, 63
        shrx rax, rbx, rcx
        CHECK64 rax, 1, "shrx 63"
        mov rdx, -1
        mov rbx, 2
        clc
        mulx r8, r9, rbx
        CHECK64 r8, 1, "mulx: high"
        CHECK64 r9, 0xFFFFFFFFFFFFFFFE, "mulx: low"
        CHECKF 0, F_CF, "mulx: flags untouched"

        ; ------------------------------------------------ POPCNT / LZCNT / MOVBE / ADX
        mov rbx, 0xF0F0F0F0F0F0F0F0
        popcnt rax, rbx
        CHECK64 rax, 32, "popcnt r64"
        CHECKF 0, OSZAPC, "popcnt: flags cleared"
        xor ebx, ebx
        popcnt rax, rbx
        CHECKF F_ZF, OSZAPC, "popcnt 0: ZF only"
        mov rbx, 1
        lzcnt rax, rbx
        CHECK64 rax, 63, "lzcnt 1 = 63"
        xor ebx, ebx
        lzcnt rax, rbx
        CHECK64 rax, 64, "lzcnt 0 = 64"
        CHECKF F_CF, F_CF|F_ZF, "lzcnt 0: CF"
        mov rbx, 0x8000000000000000
        lzcnt rax, rbx
        CHECKF F_ZF, F_CF|F_ZF, "lzcnt msb set: result 0, ZF"
        mov rax, 0x0102030405060708
        mov [BUF], rax
        movbe rax, [BUF]
        CHECK64 rax, 0x0807060504030201, "movbe r64, m64"
        mov eax, 0x11223344
        movbe [BUF], eax
        mov eax, [BUF]
        CHECK64 rax, 0x44332211, "movbe m32, r32"
        mov rax, -1
        movbe ax, [BUF]
        CHECK64 rax, 0xFFFFFFFFFFFF1122, "movbe r16 merges"
        mov rax, -1
        mov ebx, 0
        push 0x2 | F_CF                 ; CF=1, OF=0
        popfq
        adcx rax, rbx
        CHECK64 rax, 0, "adcx: -1 + 0 + CF"
        CHECKF F_CF, F_CF|F_OF, "adcx: CF out, OF untouched"
        mov rcx, 5
        mov rdx, 6
        adox rcx, rdx
        CHECK64 rcx, 11, "adox: OF=0 in"
        CHECKF F_CF, F_CF|F_OF, "adox: CF untouched, no OF"
        mov rcx, -1
        mov rdx, 1
        push 0x2 | F_OF
        popfq
        adox rcx, rdx
        CHECK64 rcx, 1, "adox: -1 + 1 + OF"
        CHECKF F_OF, F_CF|F_OF, "adox: OF out, CF untouched"

        ; ------------------------------------------------ RDTSCP
        WRMSR64 0xC0000103, 0x1234ABCD
        mov rcx, -1
        mov rdx, -1
        mov rax, -1
        rdtscp
        mov r8, rdx
        shr r8, 32
        CHECK64 rcx, 0x1234ABCD, "rdtscp: ECX = TSC_AUX, zero-extended"
        CHECK64 r8, 0, "rdtscp: RDX upper half zero"
        shl rdx, 32
        mov eax, eax
        or rax, rdx
        mov r9, rax
        rdtscp
        shl rdx, 32
        mov eax, eax
        or rax, rdx
        sub rax, r9
        sar rax, 63
        CHECK64 rax, 0, "rdtscp: TSC does not go backwards"

        ; ------------------------------------------------ 1 GiB pages
        cld
        mov rdi, PDPT_T
        xor eax, eax
        mov ecx, 3 * 4096 / 8
        rep stosq
        mov qword [LM_PML4 + 8], PDPT_T | 7
        mov qword [PDPT_T + 8], 0x80 | 7        ; LB + 1 GiB -> physical 0 (1 GiB page)
        mov rax, cr3
        mov cr3, rax
        mov qword [LM_USER + 0x80], 0x1616
        mov rbx, LB + 0x40000000 + LM_USER + 0x80
        mov rax, [rbx]
        CHECK64 rax, 0x1616, "1G page: translation"
        mov qword [rbx + 8], 1
        mov rax, [PDPT_T + 8]
        and eax, 0x60
        CHECK64 rax, 0x60, "1G page: PDPTE accessed and dirty"
        mov qword [PDPT_T + 16], 0x40000000 | 0x80 | 7 | (1 << 13)   ; bits 29:13 reserved
        mov rbx, LB + 0x80000000
        TRY
        mov rax, [rbx]
        ENDTRY
        mov qword [PDPT_T + 16], 0
        CHECK64 [LM_EXC_VEC], 14, "1G PDPTE with bit 13: #PF"
        mov rax, [LM_EXC_ERR]
        or eax, 1                       ; P: see lm_paging.asm (QEMU 7.2 omits it on RSVD faults)
        CHECK64 rax, 9, "1G PDPTE with bit 13: RSVD"

        ; ------------------------------------------------ SMEP / SMAP
        mov qword [PDPT_T], PD_T | 7
        mov qword [PD_T], PT_T | 7
        mov dword [PHYS], 0x001234B8    ; mov eax, 0x1234 / ret
        mov dword [PHYS + 4], 0x9090C300
        mov qword [PHYS + 0x1000], 0x5A5A
        mov qword [PT_T], PHYS | 7                      ; user code page
        mov qword [PT_T + 8], (PHYS + 0x1000) | 7       ; user data page
        and qword [LM_PD], ~4           ; low 2 MiB (ROM, stacks, tables) supervisor-only meanwhile
        mov rax, cr3
        mov cr3, rax
        mov rbx, LB
        xor eax, eax
        call rbx
        CHECK64 rax, 0x1234, "SMEP off: supervisor executes a user page"
        mov rax, cr4
        bts rax, 20
        mov cr4, rax
        TRY
        call rbx
        ENDTRY
        CHECK64 [LM_EXC_VEC], 14, "SMEP: supervisor fetch from a user page: #PF"
        CHECK64 [LM_EXC_ERR], 0x11, "SMEP: error code I/D|P"
        mov rax, cr4
        btr rax, 20
        bts rax, 21                     ; SMAP
        mov cr4, rax
        mov rbx, LB + 0x1000
        TRY
        mov rax, [rbx]
        ENDTRY
        CHECK64 [LM_EXC_VEC], 14, "SMAP: supervisor read of a user page: #PF"
        CHECK64 [LM_EXC_ERR], 1, "SMAP: read error code P"
        TRY
        mov [rbx], eax
        ENDTRY
        CHECK64 [LM_EXC_ERR], 3, "SMAP: write error code W|P"
        stac
        mov rax, [rbx]
        clac
        CHECK64 rax, 0x5A5A, "SMAP: allowed with RFLAGS.AC (STAC)"
        TRY
        mov rax, [rbx]
        ENDTRY
        CHECK64 [LM_EXC_VEC], 14, "SMAP: faults again after CLAC"
        mov rax, cr4
        btr rax, 21
        mov cr4, rax
        or qword [LM_PD], 4
        mov rax, cr3
        mov cr3, rax

        ; ------------------------------------------------ FSGSBASE
        TRY
        rdfsbase rax
        ENDTRY
        CHECK64 [LM_EXC_VEC], 6, "rdfsbase with CR4.FSGSBASE=0: #UD"
        mov rax, cr4
        bts rax, 16
        mov cr4, rax
        mov qword [BUF + 0x10], 0xF5
        RING3_BEGIN
        mov rax, BUF
        wrfsbase rax
        mov rax, [fs:0x10]
        mov [U_RAX], rax
        mov rax, 0xFFFFFFFF80000000
        wrgsbase rax
        rdgsbase rcx
        mov [U_RSP], rcx
        RING3_END
        CHECK64 [U_RAX], 0xF5, "wrfsbase in ring 3: FS-relative access"
        mov ecx, 0xC0000100
        rdmsr
        CHECK64 rax, BUF, "wrfsbase: IA32_FS_BASE"
        CHECK64 [U_RSP], 0xFFFFFFFF80000000, "wrgsbase / rdgsbase round trip"

        ; ------------------------------------------------ SYSENTER / SYSEXIT in IA-32e mode
        WRMSR64 0x174, LM_SEL_KCODE64
        WRMSR64 0x175, SE_STACK
        WRMSR64 0x176, se_handler
        mov qword [SE_MODE], 0
        RING3_BEGIN
        mov rsp, LM_STACK3 - 0x40
        sti
        sysenter
se_ret64:
        mov [U_RSP], rsp
        mov eax, cs
        mov [U_CS], rax
        mov eax, ss
        mov [U_SS], rax
        RING3_END
        CHECK64 [SE_RSP], SE_STACK, "sysenter: RSP = IA32_SYSENTER_ESP"
        CHECK64 [SE_CS], LM_SEL_KCODE64, "sysenter: CS = IA32_SYSENTER_CS"
        CHECK64 [SE_SS], LM_SEL_KDATA, "sysenter: SS = SYSENTER_CS + 8"
        mov rax, [SE_RFL]
        and eax, 0x200
        CHECK64 rax, 0, "sysenter: IF cleared"
        CHECK64 [U_CS], LM_SEL_UCODE64 | 3, "sysexit (REX.W): CS = SYSENTER_CS + 32"
        CHECK64 [U_SS], LM_SEL_UDATA2 | 3, "sysexit (REX.W): SS = SYSENTER_CS + 40"
        CHECK64 [U_RSP], LM_STACK3 - 0x80, "sysexit: RSP = RCX"
        mov qword [SE_MODE], 1
        RING3_BEGIN
        sysenter
        ud2
        bits 32
se_ret32:
        mov ax, LM_SEL_UDATA | 3
        mov ds, ax
        mov eax, cs
        mov [U_CS], eax
        mov eax, ss
        mov [U_SS], eax
        mov [U_RSP], esp
        mov eax, 3
        db 0x48                         ; DEC EAX in compatibility mode
        nop
        mov [U_RAX], eax
        RING3_END
        bits 64
        CHECK64 [U_CS], LM_SEL_UCODE32 | 3, "sysexit (no REX.W): CS = SYSENTER_CS + 16"
        CHECK64 [U_SS], LM_SEL_UDATA | 3, "sysexit (no REX.W): SS = SYSENTER_CS + 24"
        CHECK64 [U_RSP], LM_STACK3 - 0x90, "sysexit (no REX.W): ESP = ECX"
        CHECK64 [U_RAX], 2, "sysexit (no REX.W): compatibility mode"

        call finish64

se_handler:
        mov [SE_RSP], rsp
        pushfq
        pop qword [SE_RFL]
        mov eax, cs
        mov [SE_CS], rax
        mov eax, ss
        mov [SE_SS], rax
        cmp qword [SE_MODE], 1
        je .c
        mov rdx, se_ret64
        mov rcx, LM_STACK3 - 0x80
        o64 sysexit
.c:     mov edx, se_ret32
        mov ecx, LM_STACK3 - 0x90
        sysexit

%include "reset.inc"
