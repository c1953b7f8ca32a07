/* Stand-in for nvidia.ko: a PCI driver named "nvidia" for 10de display-class devices, char major
 * 195 ("nvidia-frontend") with /dev/nvidia<N> per bound GPU and /dev/nvidiactl, the
 * /proc/driver/nvidia tree in the real driver's format, and the "NVRM: loading" line. An open
 * device holds a reference on the module, so rmmod/modprobe -r fail "in use" while one is open. */
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include "nvfake.h"

#define NV_MAJOR 195
#define NV_CTL_MINOR 255
#define NV_MAX_GPUS 8

#ifndef NV_FAIL_DEFAULT
#define NV_FAIL_DEFAULT 0
#endif
static bool fake_fail_load = NV_FAIL_DEFAULT; /* a build made with NV_FAIL_DEFAULT=1 never loads */
module_param(fake_fail_load, bool, 0444);
MODULE_PARM_DESC(fake_fail_load, "fail the load as a driver does that finds no usable GPU");
static int NVreg_EnableGpuFirmware = 18;
module_param(NVreg_EnableGpuFirmware, int, 0444);
static int NVreg_DynamicPowerManagement = 3;
module_param(NVreg_DynamicPowerManagement, int, 0444);

static struct class *nv_class;
static struct proc_dir_entry *proc_nvidia, *proc_gpus;
static struct pci_dev *gpus[NV_MAX_GPUS];
static int gpu_count;
static atomic_t users = ATOMIC_INIT(0);

int nvfake_core_users(void) { return atomic_read(&users); }
EXPORT_SYMBOL(nvfake_core_users);
const char *nvfake_core_version(void) { return NV_VERSION_STRING; }
EXPORT_SYMBOL(nvfake_core_version);

static int nv_open(struct inode *inode, struct file *file) { atomic_inc(&users); return 0; }
static int nv_release(struct inode *inode, struct file *file) { atomic_dec(&users); return 0; }

static const struct file_operations nv_fops = {
	.owner = THIS_MODULE,
	.open = nv_open,
	.release = nv_release,
	.llseek = noop_llseek,
};

static int version_show(struct seq_file *m, void *v)
{
	seq_printf(m, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  %s  Release Build  (nvreload-vm@testbed)  Sat Nov 22 00:00:00 UTC 2026\n",
		   NV_VERSION_STRING);
	seq_puts(m, "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n");
	return 0;
}

static int information_show(struct seq_file *m, void *v)
{
	struct pci_dev *pdev = m->private;
	int minor;

	for (minor = 0; minor < gpu_count && gpus[minor] != pdev; minor++)
		;
	seq_puts(m, "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 0\n");
	seq_printf(m, "GPU UUID: \t GPU-00000000-0000-0000-0000-%012x\n", (pdev->bus->number << 8) | pdev->devfn);
	seq_printf(m, "Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\n");
	seq_printf(m, "Bus Location: \t %s\nDevice Minor: \t %d\nGPU Excluded:\t No\n", pci_name(pdev), minor);
	return 0;
}

static int nv_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int minor = gpu_count;

	if (fake_fail_load) {
		pr_err("NVRM: GPU %s: RmInitAdapter failed! (0x22:0x56:742)\n", pci_name(pdev));
		return -ENODEV;
	}
	if (minor >= NV_MAX_GPUS)
		return -ENOSPC;
	gpus[minor] = pdev;
	gpu_count++;
	device_create(nv_class, &pdev->dev, MKDEV(NV_MAJOR, minor), NULL, "nvidia%d", minor);
	proc_create_single_data("information", 0444, proc_mkdir(pci_name(pdev), proc_gpus), information_show, pdev);
	return 0;
}

static void nv_remove(struct pci_dev *pdev)
{
	int minor;

	for (minor = 0; minor < gpu_count; minor++)
		if (gpus[minor] == pdev)
			device_destroy(nv_class, MKDEV(NV_MAJOR, minor));
	remove_proc_subtree(pci_name(pdev), proc_gpus);
}

static const struct pci_device_id nv_ids[] = {
	{ .vendor = PCI_VENDOR_ID_NVIDIA, .device = PCI_ANY_ID, .subvendor = PCI_ANY_ID, .subdevice = PCI_ANY_ID,
	  .class = 0x030200, .class_mask = 0xffffff },
	{ .vendor = PCI_VENDOR_ID_NVIDIA, .device = PCI_ANY_ID, .subvendor = PCI_ANY_ID, .subdevice = PCI_ANY_ID,
	  .class = 0x030000, .class_mask = 0xffffff },
	{ }
};

static struct pci_driver nv_driver = {
	.name = "nvidia",
	.id_table = nv_ids,
	.probe = nv_probe,
	.remove = nv_remove,
};

static int __init nv_init(void)
{
	int err;

	err = register_chrdev(NV_MAJOR, "nvidia-frontend", &nv_fops);
	if (err < 0)
		return err;
	nv_class = class_create(THIS_MODULE, "nvidia");
	if (IS_ERR(nv_class)) {
		unregister_chrdev(NV_MAJOR, "nvidia-frontend");
		return PTR_ERR(nv_class);
	}
	proc_nvidia = proc_mkdir("driver/nvidia", NULL);
	proc_gpus = proc_mkdir("gpus", proc_nvidia);
	proc_create_single("version", 0444, proc_nvidia, version_show);
	err = pci_register_driver(&nv_driver);
	if (!err && gpu_count == 0)
		err = -ENODEV;
	if (err) {
		if (gpu_count == 0)
			pr_err("NVRM: No NVIDIA GPU found.\n");
		pci_unregister_driver(&nv_driver);
		remove_proc_subtree("driver/nvidia", NULL);
		class_destroy(nv_class);
		unregister_chrdev(NV_MAJOR, "nvidia-frontend");
		return -ENODEV;
	}
	device_create(nv_class, NULL, MKDEV(NV_MAJOR, NV_CTL_MINOR), NULL, "nvidiactl");
	pr_info("NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  %s  Release Build  (nvreload-vm@testbed)  Sat Nov 22 00:00:00 UTC 2026\n",
		NV_VERSION_STRING);
	return 0;
}

static void __exit nv_exit(void)
{
	device_destroy(nv_class, MKDEV(NV_MAJOR, NV_CTL_MINOR));
	pci_unregister_driver(&nv_driver);
	remove_proc_subtree("driver/nvidia", NULL);
	class_destroy(nv_class);
	unregister_chrdev(NV_MAJOR, "nvidia-frontend");
}

module_init(nv_init);
module_exit(nv_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION_STRING);
MODULE_DESCRIPTION("nvreload VM tests: stand-in for the NVIDIA kernel module");
