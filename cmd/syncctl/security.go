package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/syncstore/syncstore/rpc/client"
)

// The environment variables that give the security flags their defaults.
const (
	caEnv        = "SYNCCTL_CA"
	certEnv      = "SYNCCTL_CERT"
	keyEnv       = "SYNCCTL_KEY"
	tokenEnv     = "SYNCCTL_TOKEN"
	tokenFileEnv = "SYNCCTL_TOKEN_FILE"
)

func (s *security) register(pf *pflag.FlagSet) {
	s.flags = pf
	pf.BoolVar(&s.tls, "tls", false, "connect over TLS, trusting the system's roots unless --ca is given (implied by --ca, --cert, --key and --server-name)")
	pf.StringVar(&s.ca, "ca", os.Getenv(caEnv), "PEM file of the CA that signed the nodes' certificates (default from $"+caEnv+")")
	pf.StringVar(&s.cert, "cert", os.Getenv(certEnv), "PEM client certificate for mutual TLS, with --key (default from $"+certEnv+")")
	pf.StringVar(&s.key, "key", os.Getenv(keyEnv), "PEM key of --cert (default from $"+keyEnv+")")
	pf.StringVar(&s.serverName, "server-name", "", "name to check in the nodes' certificates (default: the host of each address)")
	// No default shown: help output must not print a secret.
	pf.StringVar(&s.token, "token", "", "bearer token sent with every call, over TLS only (default from $"+tokenEnv+"; --token-file keeps it out of ps)")
	pf.StringVar(&s.tokenFile, "token-file", "", "read the bearer token from this file (default from $"+tokenFileEnv+")")
}

// options are the client options the flags ask for.
func (s *security) options() (client.Options, error) {
	var o client.Options
	token, err := s.resolveToken()
	if err != nil {
		return o, err
	}
	useTLS := s.tls || s.ca != "" || s.cert != "" || s.key != "" || s.serverName != ""
	if token != "" && !useTLS {
		return o, usageError{errors.New("a token is only sent over TLS: give --ca (or --tls to trust the system's roots)")}
	}
	if useTLS {
		if (s.cert == "") != (s.key == "") {
			return o, usageError{errors.New("--cert and --key go together")}
		}
		if o.TLS, err = client.LoadTLS(s.ca, s.cert, s.key, s.serverName); err != nil {
			return o, err
		}
	}
	o.Token = token
	return o, nil
}

// resolveToken picks the token: --token, else --token-file, else
// $SYNCCTL_TOKEN, else $SYNCCTL_TOKEN_FILE.
func (s *security) resolveToken() (string, error) {
	flagToken, flagFile := s.flags.Changed("token"), s.flags.Changed("token-file")
	switch {
	case flagToken && flagFile:
		return "", usageError{errors.New("--token and --token-file exclude each other")}
	case flagToken:
		return checkToken(s.token, "--token")
	case flagFile:
		return readToken(s.tokenFile)
	case os.Getenv(tokenEnv) != "":
		return checkToken(os.Getenv(tokenEnv), "$"+tokenEnv)
	case os.Getenv(tokenFileEnv) != "":
		return readToken(os.Getenv(tokenFileEnv))
	}
	return "", nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return checkToken(strings.TrimSpace(string(b)), path)
}

func checkToken(token, from string) (string, error) {
	if token == "" {
		return "", usageError{fmt.Errorf("%s: the token is empty", from)}
	}
	return token, nil
}
