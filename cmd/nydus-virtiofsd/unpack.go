package main

func runUnpack(args []string) int { return notYet("unpack") }
