package main

func runVirtiofsd(args []string) int { return notYet("virtiofsd") }
