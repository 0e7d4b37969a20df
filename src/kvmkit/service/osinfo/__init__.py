"""Guest operating systems: libosinfo's database read beside kvmkit's overlay (db), the devices kvmkit uses
(devices), finding an OS by name with fallback (lookup), and the presets vm create --os applies (presets)."""
