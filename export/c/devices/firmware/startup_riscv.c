/* Start-up code for a bare-metal RV32 program on QEMU's `virt` machine (-bios none): the program is
 * loaded and run in RAM at 0x80000000 in machine mode. _start sets the stack and global pointers,
 * enables the FPU when the build has one (mstatus.FS), zeroes .bss and calls exit(main()). The console
 * is the NS16550 UART at 0x10000000; the program ends through the SiFive test device at 0x100000
 * (0x5555: pass, (status << 16) | 0x3333: fail), which ends QEMU with that status. A trap prints one
 * line and fails. No C library: firmware/libc.c. */
#include <stddef.h>
#include <stdint.h>

extern uint32_t __bss_start__, __bss_end__;
extern int main(void);
void edgernn_console_write(const char *text, size_t length);
void edgernn_exit(int status) __attribute__((noreturn));
void edgernn_c_start(void) __attribute__((noreturn));
void edgernn_trap(void) __attribute__((noreturn));

#define UART_THR (*(volatile uint8_t *)0x10000000u)
#define TEST_DEVICE (*(volatile uint32_t *)0x00100000u)

__asm__(".section .text.start, \"ax\"\n"
        ".global _start\n"
        "_start:\n"
        "  .option push\n"
        "  .option norelax\n"
        "  la gp, __global_pointer$\n"
        "  .option pop\n"
        "  la sp, __stack_top__\n"
        "  la t0, edgernn_trap_entry\n"
        "  csrw mtvec, t0\n"
        "  j edgernn_c_start\n"
        ".align 2\n"
        "edgernn_trap_entry:\n"
        "  j edgernn_trap\n");

void edgernn_console_write(const char *text, size_t length)
{
	while (length--)
		UART_THR = (uint8_t)*text++;
}

void edgernn_exit(int status)
{
	TEST_DEVICE = status == 0 ? 0x5555u : ((uint32_t)(status & 0xFFFF) << 16) | 0x3333u;
	for (;;) {
	}
}

void edgernn_trap(void)
{
	static const char message[] = "FAULT: the processor took a trap\nFAIL\n";
	edgernn_console_write(message, sizeof message - 1);
	edgernn_exit(1);
}

void edgernn_c_start(void)
{
	uint32_t *to;
#ifdef __riscv_flen
	__asm__ volatile("csrs mstatus, %0" ::"r"(0x2000u)); /* FS = initial: the FPU on */
#endif
	for (to = &__bss_start__; to < &__bss_end__;)
		*to++ = 0;
	edgernn_exit(main());
}
