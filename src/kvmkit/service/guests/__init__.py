"""Inside the guests: commands and passwords through the guest agent, disks offline through libguestfs."""
