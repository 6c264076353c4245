; mb_testdev: a multiboot (v1) test kernel for the QEMU-compatible test interfaces.
;
; A flat image with the a.out-kludge address fields (header flag 16), loaded at 1 MiB. It expects to be
; booted like this (QEMU; Ferrite takes the same options with two dashes):
;
;   qemu-system-x86_64 -kernel mb_testdev.bin -append mbtest -initrd "MODULE modarg" -m 128 \
;     -device isa-debug-exit,iobase=0xf4,iosize=4 -device pc-testdev -debugcon stdio -display none
;
; where MODULE is a file that starts with "FERRITE-MODULE".
;
; Covers: the multiboot entry state (EAX magic, flat 32-bit protected mode, paging and interrupts off),
; the information structure (flags, mem_lower/mem_upper, command line containing "mbtest", one
; page-aligned module with its contents and "modarg" command line, a memory map with available RAM at
; 1 MiB, boot loader name); fw_cfg through the ports (signature "QEMU", ID with the DMA bit, RAM size)
; and through DMA (the DMA signature register, the file directory, the file "etc/e820" with a RAM entry
; that holds 1 MiB and ends at the RAM size); pc-testdev's scratch port 0xE0 (dword and byte), its
; 64 KiB scratch memory at 0xFF000000, its page-flush port 0xE4 (around self-modifying code), and ISA
; IRQ lines 5 (master 8259) and 10 (slave) raised and lowered through ports 0x2005/0x200A and taken by
; interrupt handlers after the 8259s are reprogrammed to vectors 0x20/0x28.
;
; Reporting: "PASS: name" / "FAIL: name" lines on port 0xE9; the failure count goes to the exit port
; 0xF4 (status (n << 1) | 1, so 1 means every case passed).
;
; Sources: Multiboot Specification 0.6.96 (header, information structure, machine state); QEMU
; docs/specs/fw_cfg.rst (ports, DMA interface, file directory); QEMU hw/misc/pc-testdev.c (ports and
; MMIO window); Intel 8259A datasheet (ICW1-ICW4, OCW2 EOI).

        bits 32
        cpu 686
        org 0x100000

MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00010003          ; page-align modules, memory info, address fields valid
DBG_PORT    equ 0xE9
EXIT_PORT   equ 0xF4
FW_SEL      equ 0x510
FW_DATA     equ 0x511
FW_DMA_HI   equ 0x514
FW_DMA_LO   equ 0x518
TESTDEV_MEM equ 0xFF000000

mb_header:
        dd MB_MAGIC
        dd MB_FLAGS
        dd -(MB_MAGIC + MB_FLAGS)
        dd mb_header                ; header_addr
        dd mb_header                ; load_addr
        dd load_end                 ; load_end_addr
        dd bss_end                  ; bss_end_addr
        dd start                    ; entry_addr

; ---------------------------------------------------------------- reporting

; EXPECT cc, "name": PASS if condition cc holds (flags from the preceding compare), else FAIL.
; Preserves every register (not the flags).
%macro EXPECT 2
        push esi
        j%1 %%ok
        mov esi, %%fail_msg
        call fail
        jmp %%done
%%fail_msg: db "FAIL: ", %2, 10, 0
%%ok:
        mov esi, %%pass_msg
        call puts
        jmp %%done
%%pass_msg: db "PASS: ", %2, 10, 0
%%done:
        pop esi
%endmacro

; puts: print the NUL-terminated string at ESI. Preserves registers.
puts:
        push eax
        push esi
.l:     lodsb
        test al, al
        jz .d
        out DBG_PORT, al
        jmp .l
.d:     pop esi
        pop eax
        ret

fail:
        inc dword [failures]
        jmp puts

; ---------------------------------------------------------------- entry

start:
        ; Check the entry state before touching anything.
        mov [boot_eax], eax
        mov [boot_ebx], ebx
        mov esp, stack_top          ; ESP is undefined at entry; MOV leaves the flags alone
        pushfd
        pop dword [boot_eflags]
        mov eax, cr0
        mov [boot_cr0], eax
        mov ax, cs
        mov [boot_cs], ax

        cld
        cmp dword [boot_eax], 0x2BADB002
        EXPECT e, "EAX holds the multiboot magic"
        mov eax, [boot_cr0]
        and eax, 0x80000001
        cmp eax, 1
        EXPECT e, "protected mode, paging off"
        test dword [boot_eflags], 0x200
        EXPECT z, "interrupts off at entry"

        ; Our own GDT and IDT (the loader's are not to be relied on).
        lgdt [gdt_desc]
        jmp 0x08:.reload
.reload:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax
        call setup_idt
        lidt [idt_desc]

        call check_mbi
        call check_fw_cfg
        call check_testdev
        call check_irqs

        ; Summary and exit.
        cmp dword [failures], 0
        EXPECT e, "all cases"
        mov eax, [failures]
        out EXIT_PORT, eax
        cli
.hang:  hlt
        jmp .hang

; ---------------------------------------------------------------- multiboot information

check_mbi:
        mov ebx, [boot_ebx]
        mov eax, [ebx]
        and eax, 0x24d              ; memory, cmdline, mods, mmap, loader name
        cmp eax, 0x24d
        EXPECT e, "mbi flags: memory, cmdline, modules, mmap, loader name"
        mov eax, [ebx + 4]
        cmp eax, 512
        setae cl
        cmp eax, 640
        setbe ch
        and cl, ch
        cmp cl, 1
        EXPECT e, "mem_lower is 512-640 KiB"
        cmp dword [ebx + 8], 1024
        EXPECT ae, "mem_upper is at least 1 MiB"

        ; Command line contains "mbtest".
        mov esi, [ebx + 16]
        mov edi, str_mbtest
        call strstr
        test eax, eax
        EXPECT nz, "command line contains mbtest"

        ; One module, page-aligned, "FERRITE-MODULE" inside, "modarg" on its command line.
        cmp dword [ebx + 20], 1
        EXPECT e, "one module"
        mov edx, [ebx + 24]
        mov esi, [edx]              ; mod_start
        test esi, 0xfff
        EXPECT z, "module is page-aligned"
        mov eax, [edx + 4]
        sub eax, esi
        cmp eax, 14
        EXPECT ae, "module end after start"
        mov edi, str_module
        mov ecx, 14
        repe cmpsb
        EXPECT e, "module contents"
        mov esi, [edx + 8]
        mov edi, str_modarg
        call strstr
        test eax, eax
        EXPECT nz, "module command line has modarg"

        ; The memory map has an available entry holding 1 MiB.
        mov esi, [ebx + 48]
        mov ecx, [ebx + 44]
        add ecx, esi
        xor edx, edx
.mm:    cmp esi, ecx
        jae .mmdone
        cmp dword [esi + 20], 1
        jne .mmnext
        cmp dword [esi + 8], 0      ; base high
        jne .mmnext
        cmp dword [esi + 4], 0x100000
        ja .mmnext
        mov eax, [esi + 4]
        add eax, [esi + 12]         ; end (low 32 bits; RAM below 4 GiB here)
        cmp eax, 0x200000
        jb .mmnext
        inc edx
.mmnext:
        add esi, [esi]
        add esi, 4
        jmp .mm
.mmdone:
        cmp edx, 1
        EXPECT ae, "memory map has RAM at 1 MiB"

        mov esi, [ebx + 64]
        cmp byte [esi], 0
        EXPECT ne, "boot loader name"
        ret

; strstr: EAX = 1 if the NUL-terminated string at EDI occurs in the one at ESI, else 0.
strstr:
        push esi
        push edi
        push ecx
        push edx
.outer: mov ecx, esi
        mov edx, edi
.inner: mov al, [edx]
        test al, al
        jz .found
        cmp al, [ecx]
        jne .next
        inc ecx
        inc edx
        jmp .inner
.next:  cmp byte [esi], 0
        je .nope
        inc esi
        jmp .outer
.found: mov eax, 1
        jmp .ret
.nope:  xor eax, eax
.ret:   pop edx
        pop ecx
        pop edi
        pop esi
        ret

; ---------------------------------------------------------------- fw_cfg

; fw_select: select item AX through the selector port.
fw_select:
        push edx
        mov dx, FW_SEL
        out dx, ax
        pop edx
        ret

; fw_read_port: read ECX bytes of the selected item into EDI through the data port.
fw_read_port:
        push edx
        mov dx, FW_DATA
        rep insb
        pop edx
        ret

; fw_dma: run a DMA transfer: EAX = control, ECX = length, EDI = guest address.
; Returns EAX = the final control word (0 = done, bit 0 = error).
fw_dma:
        push edx
        bswap eax
        mov [dma_desc], eax
        bswap ecx
        mov [dma_desc + 4], ecx
        bswap ecx
        mov dword [dma_desc + 8], 0
        mov eax, edi
        bswap eax
        mov [dma_desc + 12], eax
        mov eax, dma_desc
        bswap eax
        mov dx, FW_DMA_LO
        out dx, eax                 ; the high half is 0 after reset and after every transfer
.poll:  mov eax, [dma_desc]
        bswap eax
        test eax, ~1
        jnz .poll
        pop edx
        ret

check_fw_cfg:
        xor ax, ax
        call fw_select
        mov edi, buf
        mov ecx, 4
        call fw_read_port
        cmp dword [buf], 'QEMU'
        EXPECT e, "fw_cfg signature"

        mov ax, 1
        call fw_select
        mov edi, buf
        mov ecx, 4
        call fw_read_port
        test dword [buf], 2
        EXPECT nz, "fw_cfg ID has the DMA bit"

        mov dx, FW_DMA_HI
        in eax, dx
        cmp eax, 'QEMU'
        EXPECT e, "fw_cfg DMA signature (high half)"
        mov dx, FW_DMA_LO
        in eax, dx
        cmp eax, ' CFG'
        EXPECT e, "fw_cfg DMA signature (low half)"

        mov ax, 3
        call fw_select
        mov edi, ram_size
        mov ecx, 8
        call fw_read_port
        cmp dword [ram_size], 0x400000
        EXPECT ae, "fw_cfg RAM size"

        ; The file directory through DMA: the count, then the entries.
        mov eax, (0x19 << 16) | 0x08 | 0x02     ; select FILE_DIR, read
        mov ecx, 4
        mov edi, buf
        call fw_dma
        test eax, eax
        EXPECT z, "fw_cfg DMA read of the directory count"
        mov ecx, [buf]
        bswap ecx
        mov [file_count], ecx
        cmp ecx, 60
        EXPECT be, "fw_cfg directory count is sane"
        mov ecx, [file_count]
        cmp ecx, 60
        jbe .cnt_ok
        mov ecx, 60
.cnt_ok:
        shl ecx, 6
        mov eax, 0x02                           ; read on (the offset is now 4)
        mov edi, dir
        call fw_dma
        test eax, eax
        EXPECT z, "fw_cfg DMA read of the directory"

        ; Find etc/e820.
        mov ebx, dir
        mov edx, [file_count]
        xor ebp, ebp
.find:  test edx, edx
        jz .found
        lea esi, [ebx + 8]
        mov edi, str_e820
        mov ecx, 9
        repe cmpsb
        jne .nextfile
        mov ebp, ebx
        jmp .found
.nextfile:
        add ebx, 64
        dec edx
        jmp .find
.found:
        test ebp, ebp
        EXPECT nz, "fw_cfg has etc/e820"
        test ebp, ebp
        jz .done
        mov ecx, [ebp]
        bswap ecx                               ; size
        cmp ecx, 20 * 32
        jbe .sz_ok
        mov ecx, 20 * 32
.sz_ok: mov [e820_size], ecx
        movzx eax, word [ebp + 4]
        xchg al, ah                             ; selector (big-endian)
        shl eax, 16
        or eax, 0x08 | 0x02
        mov edi, e820
        call fw_dma
        test eax, eax
        EXPECT z, "fw_cfg DMA read of etc/e820"

        ; A RAM entry holds 1 MiB and ends at the RAM size (RAM below 3.5 GiB here).
        mov esi, e820
        mov ecx, [e820_size]
        add ecx, esi
        xor edx, edx
.ent:   lea eax, [esi + 20]
        cmp eax, ecx
        ja .entdone
        cmp dword [esi + 16], 1
        jne .entnext
        cmp dword [esi + 4], 0
        jne .entnext
        cmp dword [esi], 0x100000
        ja .entnext
        mov eax, [esi]
        add eax, [esi + 8]
        cmp eax, [ram_size]
        jne .entnext
        inc edx
.entnext:
        add esi, 20
        jmp .ent
.entdone:
        cmp edx, 1
        EXPECT e, "etc/e820 has RAM from below 1 MiB to the RAM size"

        ; DMA past the end of an item zero-fills; a skip moves the offset.
        mov dword [buf], 0xffffffff
        mov dword [buf + 4], 0xffffffff
        mov eax, (0x00 << 16) | 0x08 | 0x04     ; select signature, skip
        mov ecx, 2
        xor edi, edi
        call fw_dma
        mov eax, 0x02
        mov ecx, 8
        mov edi, buf
        call fw_dma
        test eax, eax
        EXPECT z, "fw_cfg DMA skip + read"
        cmp dword [buf], 'MU' ; 'M','U',0,0
        EXPECT e, "fw_cfg DMA read after skip, zero past the end"
        cmp dword [buf + 4], 0
        EXPECT e, "fw_cfg DMA zero fill"
.done:
        ret

; ---------------------------------------------------------------- pc-testdev

check_testdev:
        mov eax, 0x12345678
        out 0xE0, eax
        in eax, 0xE0
        cmp eax, 0x12345678
        EXPECT e, "testdev scratch port dword"
        mov al, 0xab
        out 0xE2, al
        in eax, 0xE0
        cmp eax, 0x12ab5678
        EXPECT e, "testdev scratch port byte"

        mov dword [TESTDEV_MEM], 0xdeadbeef
        mov dword [TESTDEV_MEM + 0xfffc], 0x01020304
        cmp dword [TESTDEV_MEM], 0xdeadbeef
        EXPECT e, "testdev scratch memory (start)"
        cmp dword [TESTDEV_MEM + 0xfffc], 0x01020304
        EXPECT e, "testdev scratch memory (end)"

        ; Self-modifying code around the page-flush port: mov eax, imm32; ret.
        mov byte [smc], 0xB8
        mov dword [smc + 1], 1111
        mov byte [smc + 5], 0xC3
        call smc
        cmp eax, 1111
        EXPECT e, "generated code runs"
        mov dword [smc + 1], 2222
        mov eax, smc
        out 0xE4, eax
        call smc
        cmp eax, 2222
        EXPECT e, "page flush port, then changed code runs"
        ret

; ---------------------------------------------------------------- IRQ lines through the 8259s

; pic_init: master at 0x20, slave at 0x28, everything masked but IRQ 2 (cascade), 5 and 10.
pic_init:
        mov al, 0x11
        out 0x20, al
        out 0xA0, al
        mov al, 0x20
        out 0x21, al
        mov al, 0x28
        out 0xA1, al
        mov al, 4
        out 0x21, al
        mov al, 2
        out 0xA1, al
        mov al, 1
        out 0x21, al
        out 0xA1, al
        mov al, ~((1 << 2) | (1 << 5)) & 0xff
        out 0x21, al
        mov al, ~(1 << 2) & 0xff    ; slave: IRQ 10 = slave input 2
        out 0xA1, al
        ret

; wait_irq: enable interrupts and spin until [EBX] becomes nonzero (or give up). Interrupts off after.
wait_irq:
        mov ecx, 2000000
        sti
.w:     cmp dword [ebx], 0
        jne .d
        dec ecx
        jnz .w
.d:     cli
        ret

check_irqs:
        call pic_init
        ; IRQ 5 on the master.
        mov dx, 0x2005
        mov al, 1
        out dx, al
        mov ebx, irq5_count
        call wait_irq
        cmp dword [irq5_count], 1
        EXPECT e, "IRQ 5 raised through pc-testdev reaches its handler"
        ; The handler lowered the line: nothing more arrives.
        mov ecx, 100000
        sti
.quiet: dec ecx
        jnz .quiet
        cli
        cmp dword [irq5_count], 1
        EXPECT e, "IRQ 5 lowered: exactly one interrupt"

        ; IRQ 10 on the slave.
        mov dx, 0x200A
        mov al, 1
        out dx, al
        mov ebx, irq10_count
        call wait_irq
        cmp dword [irq10_count], 1
        EXPECT e, "IRQ 10 raised through pc-testdev reaches its handler"
        ; A raise and lower while interrupts are off still latches the edge in the 8259.
        mov dx, 0x2005
        mov al, 1
        out dx, al
        mov al, 0
        out dx, al
        mov ebx, irq5_second
        call wait_irq
        cmp dword [irq5_count], 2
        EXPECT e, "an IRQ 5 pulse is latched (edge-triggered)"
        cmp dword [unexpected], 0
        EXPECT e, "no unexpected interrupts"
        ret

; ---------------------------------------------------------------- interrupt handlers

setup_idt:
        mov edi, idt
        xor ecx, ecx
.l:     mov eax, unexpected_handler
        cmp ecx, 32
        jae .set
        mov eax, exception_handler
.set:   cmp ecx, 0x25
        jne .n1
        mov eax, irq5_handler
.n1:    cmp ecx, 0x2A
        jne .n2
        mov eax, irq10_handler
.n2:    mov [edi], ax
        mov word [edi + 2], 0x08
        mov word [edi + 4], 0x8E00
        shr eax, 16
        mov [edi + 6], ax
        add edi, 8
        inc ecx
        cmp ecx, 256
        jb .l
        ret

irq5_handler:
        push eax
        push edx
        inc dword [irq5_count]
        cmp dword [irq5_count], 2
        jne .first
        mov dword [irq5_second], 1
.first:
        mov dx, 0x2005
        xor al, al
        out dx, al                  ; lower the line
        mov al, 0x20
        out 0x20, al                ; non-specific EOI
        pop edx
        pop eax
        iretd

irq10_handler:
        push eax
        push edx
        inc dword [irq10_count]
        mov dx, 0x200A
        xor al, al
        out dx, al
        mov al, 0x20
        out 0xA0, al                ; EOI to the slave, then the master
        out 0x20, al
        pop edx
        pop eax
        iretd

unexpected_handler:
        push eax
        inc dword [unexpected]
        mov al, 0x20
        out 0xA0, al
        out 0x20, al
        pop eax
        iretd

exception_handler:
        mov esi, msg_exception
        call fail
        mov eax, [failures]
        or eax, 0x40
        out EXIT_PORT, eax
        cli
        hlt

; ---------------------------------------------------------------- data

        align 8
gdt:    dq 0
        dq 0x00cf9b000000ffff       ; 0x08: flat 32-bit code
        dq 0x00cf93000000ffff       ; 0x10: flat data
gdt_desc:
        dw gdt_desc - gdt - 1
        dd gdt
idt_desc:
        dw 256 * 8 - 1
        dd idt

str_mbtest: db "mbtest", 0
str_modarg: db "modarg", 0
str_module: db "FERRITE-MODULE"
str_e820:   db "etc/e820", 0
msg_exception: db "FAIL: unexpected CPU exception", 10, 0

        align 4
failures:    dd 0
irq5_count:  dd 0
irq5_second: dd 0
irq10_count: dd 0
unexpected:  dd 0

        align 16
load_end:

; ---------------------------------------------------------------- bss (cleared by the loader)
        absolute load_end
boot_eax:    resd 1
boot_ebx:    resd 1
boot_eflags: resd 1
boot_cr0:    resd 1
boot_cs:     resd 1
file_count:  resd 1
e820_size:   resd 1
ram_size:    resq 1
        alignb 16
dma_desc:    resb 16
buf:         resb 64
smc:         resb 16
        alignb 4096
idt:         resb 256 * 8
dir:         resb 60 * 64
e820:        resb 20 * 32
        alignb 16
stack:       resb 16384
stack_top:
bss_end:
