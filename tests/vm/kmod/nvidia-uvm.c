/* Stand-in for nvidia-uvm.ko: its own dynamic char major ("nvidia-uvm") and /dev/nvidia-uvm; an
 * open descriptor pins it; it calls into nvidia, so nvidia lists it as a holder. */
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/module.h>
#include "nvfake.h"

static int major;
static struct class *uvm_class;

static const struct file_operations uvm_fops = { .owner = THIS_MODULE, .llseek = noop_llseek };

static int __init uvm_init(void)
{
	NVFAKE_REQUIRE_SAME_VERSION("nvidia-uvm");
	major = register_chrdev(0, "nvidia-uvm", &uvm_fops);
	if (major < 0)
		return major;
	uvm_class = class_create(THIS_MODULE, "nvidia-uvm");
	if (IS_ERR(uvm_class)) {
		unregister_chrdev(major, "nvidia-uvm");
		return PTR_ERR(uvm_class);
	}
	device_create(uvm_class, NULL, MKDEV(major, 0), NULL, "nvidia-uvm");
	return 0;
}

static void __exit uvm_exit(void)
{
	device_destroy(uvm_class, MKDEV(major, 0));
	class_destroy(uvm_class);
	unregister_chrdev(major, "nvidia-uvm");
}

module_init(uvm_init);
module_exit(uvm_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION_STRING);
