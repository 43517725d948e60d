package main

func runFuse(args []string) int { return notYet("fuse") }
