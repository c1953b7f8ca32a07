/* nvtest_gpubus: turns QEMU's "edu" PCI devices (1234:11e8) into what the NVIDIA driver binds to,
 * 10de:2330 with the 3D-controller class, the way an H100 shows on a real bus. Loaded once at boot
 * and never unloaded: the "GPUs" stay on the bus while the driver comes and goes, as real ones do. */
#include <linux/module.h>
#include <linux/pci.h>

static int relabelled;

static int __init gpubus_init(void)
{
	struct pci_dev *pdev = NULL;

	while ((pdev = pci_get_device(0x1234, 0x11e8, pdev)) != NULL) {
		pdev->vendor = PCI_VENDOR_ID_NVIDIA;
		pdev->device = 0x2330;
		pdev->class = 0x030200;
		relabelled++;
		pr_info("nvtest_gpubus: %s is now 10de:2330 (3D controller)\n", pci_name(pdev));
	}
	return 0;
}

static void __exit gpubus_exit(void) {}

module_init(gpubus_init);
module_exit(gpubus_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nvreload VM tests: relabel QEMU edu devices as NVIDIA GPUs");
